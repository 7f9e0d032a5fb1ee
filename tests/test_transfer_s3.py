"""S3 transfer through the product path: the upload-bundle and download-bundle flows (Prefect
test harness) against a real HTTP endpoint (moto server on 127.0.0.1), seen through a
recording proxy.

moto accepts wrong checksums, so every check here is d8mirror's own: SHA-256 in metadata,
HEAD after upload, manifest read back, hashes on download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request, Response
from transfer_support import (
    ACCESS_KEY,
    SECRET_KEY,
    file_rows,
    make_bundle,
    moto_endpoint,
    statuses,
)

from d8mirror.errors import TransferFailed
from d8mirror.files import partial_path
from d8mirror.transfer import s3
from d8mirror.transfer.errors import (
    IncompleteUploadError,
    StorageAccessError,
    TransferIntegrityError,
)
from d8mirror.transfer.manifest import MANIFEST_NAME, build_manifest
from d8mirror.transfer.urls import S3Url
from flows.transfer import download_bundle, upload_bundle
from tasks.transfer_models import DownloadParameters, TransferSummary, UploadParameters

pytestmark = pytest.mark.usefixtures("prefect_server")
PREFIX = "site/2024-06"
BIG = "package-big.tar"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows find the keys through the AWS chain (the environment), nothing else."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def client(endpoint: str) -> Any:
    """A direct client to moto, to arrange and inspect the bucket."""
    return s3.make_client(
        s3.S3Settings(endpoint_url=endpoint, region="us-east-1"),
        s3.S3Credentials(ACCESS_KEY, SECRET_KEY),
    )


@pytest.fixture
def url(client: Any, request: pytest.FixtureRequest) -> S3Url:
    bucket = "b-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:20]
    client.create_bucket(Bucket=bucket)
    return S3Url(bucket, PREFIX)


@pytest.fixture
def proxy(endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(endpoint.removeprefix("http://")) as recording:
        yield recording


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("s3-bundle"))


def _common(proxy: FaultProxy, url: S3Url) -> dict[str, Any]:
    return {
        "url": str(url),
        "endpoint_url": f"http://{proxy.host}",
        "region": "us-east-1",
        "part_size_mib": 5,
        "concurrency": 3,
        "file_concurrency": 3,
    }


def _upload(proxy: FaultProxy, url: S3Url, bundle: Path) -> Any:
    """The upload-bundle run's final state."""
    return upload_bundle(
        UploadParameters(bundle_dir=str(bundle), **_common(proxy, url)), return_state=True
    )


def _download(proxy: FaultProxy, url: S3Url, dest: Path) -> Any:
    return download_bundle(
        DownloadParameters(dest_dir=str(dest), **_common(proxy, url)), return_state=True
    )


def _writes(proxy: FaultProxy, url: S3Url) -> list[tuple[str, str]]:
    """(method, file name) of every PUT/POST under the prefix, in arrival order."""
    with proxy._lock:
        seen = list(proxy.seen)
    marker = f"/{url.bucket}/{url.prefix}/"
    return [
        (method, path.split(marker, 1)[1])
        for method, path in seen
        if method in ("PUT", "POST") and marker in path
    ]


def _same_tree(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert sorted(p.name for p in b.iterdir() if p.name != MANIFEST_NAME) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_round_trip_is_byte_identical_multipart_and_manifest_last(
    client: Any, url: S3Url, bundle: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    names = build_manifest(bundle).names()
    up = _upload(proxy, url, bundle)
    assert up.is_completed(), up
    summary: TransferSummary = up.result()
    assert summary.statuses == {"uploaded": len(names)} and summary.failed == []
    assert summary.bytes == summary.bytes_moved == build_manifest(bundle).total_bytes
    assert set(statuses(file_rows(up)).values()) == {"uploaded"}
    writes = _writes(proxy, url)
    assert writes[-1] == ("PUT", MANIFEST_NAME)  # the commit record goes last
    assert [w for w in writes if w[1] == MANIFEST_NAME] == [("PUT", MANIFEST_NAME)]
    assert set(names) <= {name for _, name in writes[:-1]}
    # 2 * 5 MiB + 123 bytes in 5 MiB parts: create, 3 parts, complete
    assert [method for method, name in writes if name == BIG].count("PUT") == 3
    head = client.head_object(Bucket=url.bucket, Key=url.key(BIG))
    assert head["ETag"].endswith('-3"')
    assert head["Metadata"]["sha256"] == hashlib.sha256((bundle / BIG).read_bytes()).hexdigest()

    out = tmp_path / "out"
    down = _download(proxy, url, out)
    assert down.is_completed(), down
    assert down.result().statuses == {"downloaded": len(names)}
    _same_tree(bundle, out)
    assert (out / MANIFEST_NAME).read_bytes() == build_manifest(bundle).to_bytes()
    assert not list(out.glob("*.partial"))


def test_same_checksum_is_skipped(url: S3Url, bundle: Path, proxy: FaultProxy) -> None:
    assert _upload(proxy, url, bundle).is_completed()
    with proxy._lock:
        proxy.seen.clear()
    again = _upload(proxy, url, bundle)
    assert again.is_completed(), again
    assert set(statuses(file_rows(again)).values()) == {"skipped"}
    assert again.result().bytes_moved == 0
    assert _writes(proxy, url) == [("PUT", MANIFEST_NAME)]  # only the manifest


def test_interrupted_upload_resumes_without_resending_finished_files(
    client: Any, url: S3Url, bundle: Path, proxy: FaultProxy, endpoint: str
) -> None:
    names = build_manifest(bundle).names()
    victim = names[3]

    def deny(request: Request) -> Response | None:
        if request.method in ("PUT", "POST") and request.path.endswith("/" + victim):
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                b"<Message>Access Denied</Message></Error>"
            )
            return Response(403, [("Content-Type", "application/xml")], body)
        return None

    with FaultProxy(endpoint.removeprefix("http://"), intercept=deny) as denying:
        cut = _upload(denying, url, bundle)
    assert cut.is_failed()
    with pytest.raises(TransferFailed, match=f"nothing committed.*{victim}"):
        cut.result()
    rows = file_rows(cut)
    assert rows[victim]["status"] == "failed" and "StorageAccessError" in rows[victim]["error"]
    assert all(rows[n]["status"] == "uploaded" for n in names if n != victim)
    with pytest.raises(IncompleteUploadError):
        s3.read_manifest(client, url)

    again = _upload(proxy, url, bundle)
    assert again.is_completed(), again
    assert statuses(file_rows(again)) == {
        n: "uploaded" if n == victim else "skipped" for n in names
    }
    sent = {name for _, name in _writes(proxy, url)}
    assert sent == {victim, MANIFEST_NAME}


def test_incomplete_upload_is_refused(
    client: Any, url: S3Url, bundle: Path, proxy: FaultProxy, endpoint: str, tmp_path: Path
) -> None:
    manifest = build_manifest(bundle)
    entry = manifest.files[0]
    s3.upload_file(
        client,
        url,
        bundle / entry.name,
        entry,
        s3.S3Settings(endpoint_url=endpoint, region="us-east-1"),
    )
    out = tmp_path / "out"
    with pytest.raises(IncompleteUploadError, match="no transfer manifest"):
        download_bundle(DownloadParameters(dest_dir=str(out), **_common(proxy, url)))
    assert not out.exists()
    s3.put_manifest(client, url, manifest)  # manifest present, files missing
    with pytest.raises(IncompleteUploadError, match="missing"):
        download_bundle(DownloadParameters(dest_dir=str(out), **_common(proxy, url)))
    assert not out.exists()


@pytest.mark.parametrize("keep_metadata", [False, True])
def test_corrupted_object_is_detected_and_nothing_lands(
    client: Any, url: S3Url, bundle: Path, proxy: FaultProxy, tmp_path: Path, keep_metadata: bool
) -> None:
    assert _upload(proxy, url, bundle).is_completed()
    key = url.key(BIG)
    data = bytearray((bundle / BIG).read_bytes())
    data[len(data) // 2] ^= 0xFF
    metadata = client.head_object(Bucket=url.bucket, Key=key)["Metadata"] if keep_metadata else {}
    client.put_object(Bucket=url.bucket, Key=key, Body=bytes(data), Metadata=metadata)
    out = tmp_path / "out"
    state = _download(proxy, url, out)
    assert state.is_failed()
    if keep_metadata:  # HEAD agrees, the bytes do not: the file fails, the others land
        with pytest.raises(TransferFailed, match=BIG):
            state.result()
        row = file_rows(state)[BIG]
        assert row["status"] == "failed" and "TransferIntegrityError" in row["error"]
    else:  # the recorded SHA-256 is gone: refused before any download
        with pytest.raises(TransferIntegrityError, match=BIG):
            state.result()
    assert not (out / BIG).exists()
    assert not (out / (BIG + ".partial")).exists()
    assert not (out / MANIFEST_NAME).exists()


def test_download_resumes_from_partial_with_range(
    url: S3Url, bundle: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    assert _upload(proxy, url, bundle).is_completed()
    out = tmp_path / "out"
    out.mkdir()
    original = (bundle / BIG).read_bytes()
    half = len(original) // 2
    partial_path(out / BIG).write_bytes(original[:half])
    with proxy._lock:
        proxy.exchanges.clear()
    state = _download(proxy, url, out)
    assert state.is_completed(), state
    rows = statuses(file_rows(state))
    assert rows.pop(BIG) == "resumed"
    assert set(rows.values()) == {"downloaded"}
    gets = [
        e.range
        for e in proxy.completed("GET", f"/{url.prefix}/{BIG}")
        if e.path.endswith("/" + BIG)
    ]
    assert gets == [f"bytes={half}-"]
    assert (out / BIG).read_bytes() == original


def test_wrong_partial_is_discarded(
    client: Any, url: S3Url, bundle: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    """download_file, the one step the download-file task runs, on a partial that is not a
    prefix of the object: refused and removed, so the task's retry starts afresh."""
    assert _upload(proxy, url, bundle).is_completed()
    entry = next(e for e in s3.read_manifest(client, url).files if e.name == "report.json")
    out = tmp_path / "out"
    out.mkdir()
    partial_path(out / entry.name).write_bytes(b"garbage")
    with pytest.raises(TransferIntegrityError):
        s3.download_file(client, url, entry, out)
    assert not partial_path(out / entry.name).exists()
    assert s3.download_file(client, url, entry, out).status == "downloaded"


def test_corrupt_local_file_is_never_uploaded(
    tmp_path: Path, url: S3Url, proxy: FaultProxy
) -> None:
    bundle = make_bundle(tmp_path, big=1000)
    data = bytearray((bundle / BIG).read_bytes())
    data[0] ^= 1
    (bundle / BIG).write_bytes(bytes(data))
    with pytest.raises(TransferIntegrityError, match="sidecar"):
        upload_bundle(UploadParameters(bundle_dir=str(bundle), **_common(proxy, url)))
    assert _writes(proxy, url) == []


def test_missing_credentials_are_a_typed_error(
    url: S3Url, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(StorageAccessError, match="no S3 credentials"):
        download_bundle(DownloadParameters(dest_dir=str(tmp_path / "out"), **_common(proxy, url)))


def test_credentials_never_in_repr() -> None:
    creds = s3.S3Credentials(ACCESS_KEY, SECRET_KEY, "tok-d8mirror")
    assert SECRET_KEY not in repr(creds)
    assert "tok-d8mirror" not in repr(creds)
