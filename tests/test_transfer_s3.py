"""S3 transfer against a real HTTP endpoint (moto server on 127.0.0.1).

moto accepts wrong checksums, so every check here is d8mirror's own: SHA-256 in metadata,
HEAD after upload, manifest read back, hashes on download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions as bx
import pytest
from transfer_support import (
    ACCESS_KEY,
    PART,
    SECRET_KEY,
    CallCounter,
    make_bundle,
    moto_endpoint,
)

from d8mirror.transfer import s3
from d8mirror.transfer.errors import (
    IncompleteUploadError,
    StorageAccessError,
    StorageNetworkError,
    TransferIntegrityError,
)
from d8mirror.transfer.manifest import MANIFEST_NAME, build_manifest
from d8mirror.transfer.urls import S3Url


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture
def settings(endpoint: str) -> s3.S3Settings:
    return s3.S3Settings(endpoint_url=endpoint, region="us-east-1", part_size=PART,
                         concurrency=3)


@pytest.fixture
def client(settings: s3.S3Settings) -> Any:
    return s3.make_client(settings, s3.S3Credentials(ACCESS_KEY, SECRET_KEY))


@pytest.fixture
def url(client: Any, request: pytest.FixtureRequest) -> S3Url:
    bucket = "b-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:20]
    client.create_bucket(Bucket=bucket)
    return S3Url(bucket, "site/2024-06")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("s3-bundle"))


def _same_tree(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert sorted(p.name for p in b.iterdir() if p.name != MANIFEST_NAME) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_round_trip_is_byte_identical_and_multipart(client: Any, url: S3Url, bundle: Path,
                                                    settings: s3.S3Settings,
                                                    tmp_path: Path) -> None:
    counter = CallCounter(client)
    results = s3.upload_bundle(client, bundle, url, settings)
    assert {r.status for r in results} == {"uploaded"}
    assert counter.sends("package-big.tar") == 1 + 3  # CreateMultipartUpload + 3 parts
    head = client.head_object(Bucket=url.bucket, Key=url.key("package-big.tar"))
    assert head["ETag"].endswith('-3"')
    assert head["Metadata"]["sha256"] == hashlib.sha256(
        (bundle / "package-big.tar").read_bytes()).hexdigest()
    out = tmp_path / "out"
    downloaded = s3.download_bundle(client, url, out)
    assert {r.status for r in downloaded} == {"downloaded"}
    _same_tree(bundle, out)
    assert (out / MANIFEST_NAME).read_bytes() == build_manifest(bundle).to_bytes()
    assert not list(out.glob("*.partial"))


def test_manifest_is_written_last(client: Any, url: S3Url, bundle: Path,
                                  settings: s3.S3Settings) -> None:
    order: list[str] = []
    client.meta.events.register(
        "provide-client-params.s3.PutObject",
        lambda params, **_: order.append(params["Key"].rsplit("/", 1)[-1]))
    client.meta.events.register(
        "provide-client-params.s3.CreateMultipartUpload",
        lambda params, **_: order.append(params["Key"].rsplit("/", 1)[-1]))
    s3.upload_bundle(client, bundle, url, settings)
    assert order[-1] == MANIFEST_NAME
    assert order.count(MANIFEST_NAME) == 1


def test_same_checksum_is_skipped(client: Any, url: S3Url, bundle: Path,
                                  settings: s3.S3Settings) -> None:
    s3.upload_bundle(client, bundle, url, settings)
    counter = CallCounter(client)
    again = s3.upload_bundle(client, bundle, url, settings)
    assert {r.status for r in again} == {"skipped"}
    assert counter.total("UploadPart") == 0
    assert counter.total("CreateMultipartUpload") == 0
    assert counter.total("PutObject") == 1  # only the manifest


def test_interrupted_upload_resumes_without_resending_finished_files(
        client: Any, url: S3Url, bundle: Path, settings: s3.S3Settings) -> None:
    names = build_manifest(bundle).names()
    victim = names[3]

    def cut(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith("/" + victim):
            raise bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    client.meta.events.register("provide-client-params.s3.PutObject", cut)
    client.meta.events.register("provide-client-params.s3.CreateMultipartUpload", cut)
    with pytest.raises(StorageNetworkError):
        s3.upload_bundle(client, bundle, url, settings)
    with pytest.raises(IncompleteUploadError):
        s3.read_manifest(client, url)
    client.meta.events.unregister("provide-client-params.s3.PutObject", cut)
    client.meta.events.unregister("provide-client-params.s3.CreateMultipartUpload", cut)

    counter = CallCounter(client)
    results = {r.name: r.status for r in s3.upload_bundle(client, bundle, url, settings)}
    assert [results[n] for n in names[:3]] == ["skipped"] * 3
    assert all(results[n] == "uploaded" for n in names[3:])
    assert [counter.sends(n) for n in names[:3]] == [0, 0, 0]
    assert all(counter.sends(n) >= 1 for n in names[3:])


def test_incomplete_upload_is_refused(client: Any, url: S3Url, bundle: Path,
                                      settings: s3.S3Settings, tmp_path: Path) -> None:
    manifest = build_manifest(bundle)
    entry = manifest.files[0]
    s3.upload_file(client, url, bundle / entry.name, entry, settings)
    with pytest.raises(IncompleteUploadError, match="no transfer manifest"):
        s3.download_bundle(client, url, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    s3.put_manifest(client, url, manifest)  # manifest present, files missing
    with pytest.raises(IncompleteUploadError, match="missing"):
        s3.download_bundle(client, url, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep_metadata", [False, True])
def test_corrupted_object_is_detected_and_nothing_lands(client: Any, url: S3Url, bundle: Path,
                                                       settings: s3.S3Settings, tmp_path: Path,
                                                       keep_metadata: bool) -> None:
    s3.upload_bundle(client, bundle, url, settings)
    name = "package-big.tar"
    key = url.key(name)
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    metadata = client.head_object(Bucket=url.bucket, Key=key)["Metadata"] if keep_metadata \
        else {}
    client.put_object(Bucket=url.bucket, Key=key, Body=bytes(data), Metadata=metadata)
    out = tmp_path / "out"
    with pytest.raises(TransferIntegrityError):
        s3.download_bundle(client, url, out)
    assert not (out / name).exists()
    assert not (out / (name + ".partial")).exists()
    assert not (out / MANIFEST_NAME).exists()


def test_download_resumes_from_partial_with_range(client: Any, url: S3Url, bundle: Path,
                                                  settings: s3.S3Settings,
                                                  tmp_path: Path) -> None:
    s3.upload_bundle(client, bundle, url, settings)
    manifest = s3.read_manifest(client, url)
    entry = next(e for e in manifest.files if e.name == "package-big.tar")
    out = tmp_path / "out"
    out.mkdir()
    original = (bundle / entry.name).read_bytes()
    half = len(original) // 2
    s3.partial_path(out / entry.name).write_bytes(original[:half])
    ranges: list[str] = []
    client.meta.events.register("provide-client-params.s3.GetObject",
                                lambda params, **_: ranges.append(params.get("Range", "")))
    result = s3.download_file(client, url, entry, out)
    assert result.status == "resumed"
    assert ranges == [f"bytes={half}-"]
    assert (out / entry.name).read_bytes() == original


def test_wrong_partial_is_discarded(client: Any, url: S3Url, bundle: Path,
                                    settings: s3.S3Settings, tmp_path: Path) -> None:
    s3.upload_bundle(client, bundle, url, settings)
    entry = next(e for e in s3.read_manifest(client, url).files if e.name == "report.json")
    out = tmp_path / "out"
    out.mkdir()
    s3.partial_path(out / entry.name).write_bytes(b"garbage")
    with pytest.raises(TransferIntegrityError):
        s3.download_file(client, url, entry, out)
    assert not s3.partial_path(out / entry.name).exists()
    assert s3.download_file(client, url, entry, out).status == "downloaded"


def test_corrupt_local_file_is_never_uploaded(tmp_path: Path, client: Any, url: S3Url) -> None:
    bundle = make_bundle(tmp_path, big=1000)
    data = bytearray((bundle / "package-big.tar").read_bytes())
    data[0] ^= 1
    (bundle / "package-big.tar").write_bytes(bytes(data))
    with pytest.raises(TransferIntegrityError, match="sidecar"):
        build_manifest(bundle)


def test_missing_credentials_are_a_typed_error(endpoint: str, url: S3Url,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = s3.make_client(s3.S3Settings(endpoint_url=endpoint, region="us-east-1"))
    with pytest.raises(StorageAccessError, match="no S3 credentials"):
        s3.read_manifest(anonymous, url)


def test_credentials_never_in_repr() -> None:
    creds = s3.S3Credentials(ACCESS_KEY, SECRET_KEY, "tok-d8mirror")
    assert SECRET_KEY not in repr(creds)
    assert "tok-d8mirror" not in repr(creds)
