"""OCI-artifact transfer against the real registry (Debian docker-registry on 127.0.0.1).

Interop: skopeo reads the manifest as a valid OCI artifact with title annotations, and
oras-py's ``pull`` (what ``oras pull`` does) restores the files by name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from faultproxy import FaultProxy
from transfer_support import make_bundle

from d8mirror.errors import UnauthorizedError
from d8mirror.mediatypes import ANNOTATION_TITLE, OCI_EMPTY, OCI_MANIFEST
from d8mirror.registry import RegistryClient, TLSOptions
from d8mirror.testbed.registry_server import RegistryServer
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.errors import IncompleteUploadError
from d8mirror.transfer.manifest import MANIFEST_NAME, build_manifest
from d8mirror.transfer.urls import OciUrl

CHUNK = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("oci-bundle"), big=3 * CHUNK + 7)


def _url(server: RegistryServer, repo: str, tag: str = "2024-06-01") -> OciUrl:
    return OciUrl(server.host, repo, tag)


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert sorted(p.name for p in b.iterdir() if p.name != MANIFEST_NAME) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_round_trip_chunked_and_byte_identical(registry: RegistryServer, bundle: Path,
                                               tmp_path: Path) -> None:
    url = _url(registry, "airgap/round-trip")
    with registry.client() as client:
        registry.clear_requests()
        results, digest = oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
        assert {r.status for r in results} == {"uploaded"}
        # only the big file (3 chunks + 7 bytes) goes in pieces
        assert registry.count("PATCH", "/airgap/round-trip/blobs/uploads/") == 4
        out = tmp_path / "out"
        downloaded = oci.download_artifact(client, url, out)
    assert {r.status for r in downloaded} == {"downloaded"}
    assert digest.startswith("sha256:")
    _same_files(bundle, out)
    assert (out / MANIFEST_NAME).read_bytes() == build_manifest(bundle).to_bytes()


def test_reupload_skips_blobs_and_keeps_digest(registry: RegistryServer, bundle: Path) -> None:
    url = _url(registry, "airgap/again")
    with registry.client() as client:
        _, first = oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
        registry.clear_requests()
        results, second = oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
    assert {r.status for r in results} == {"skipped"}
    assert second == first
    assert registry.count("PATCH", "/blobs/uploads/") == 0
    assert registry.count("PUT", "/blobs/uploads/") == 0


def test_manifest_is_a_valid_oras_artifact(registry: RegistryServer, bundle: Path) -> None:
    url = _url(registry, "airgap/interop")
    with registry.client() as client:
        oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{registry.host}/{url.repository}:{url.tag}"],
        check=True, capture_output=True, timeout=60).stdout
    doc = json.loads(raw)
    assert doc["mediaType"] == OCI_MANIFEST
    assert doc["artifactType"] == oci.ARTIFACT_TYPE
    assert doc["config"] == {"mediaType": OCI_EMPTY, "digest": oci.EMPTY_DIGEST, "size": 2}
    titles = [layer["annotations"][ANNOTATION_TITLE] for layer in doc["layers"]]
    assert titles == [*build_manifest(bundle).names(), MANIFEST_NAME]
    types = {layer["annotations"][ANNOTATION_TITLE]: layer["mediaType"]
             for layer in doc["layers"]}
    assert types["package-big.tar"] == oci.ARCHIVE_TYPE
    assert types["package-big.tar.sha256"] == "text/plain"


def test_oras_py_pull_restores_the_files(registry: RegistryServer, bundle: Path,
                                         tmp_path: Path) -> None:
    import oras.client

    url = _url(registry, "airgap/oras-pull")
    with registry.client() as client:
        oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
    oras_client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    out = tmp_path / "oras"
    oras_client.pull(target=f"{registry.host}/{url.repository}:{url.tag}", outdir=str(out))
    _same_files(bundle, out)


def test_missing_tag_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    with registry.client() as client, pytest.raises(IncompleteUploadError, match="no artifact"):
        oci.download_artifact(client, _url(registry, "airgap/nothing"), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_artifact_without_transfer_manifest_is_refused(registry: RegistryServer, bundle: Path,
                                                       tmp_path: Path) -> None:
    url = _url(registry, "airgap/no-manifest")
    manifest = build_manifest(bundle)
    entry = manifest.files[0]
    with registry.client() as client:
        oci.upload_artifact(client, bundle, _url(registry, "airgap/no-manifest", "full"))
        doc = json.loads(oci.artifact_manifest(manifest, entry))
        doc["layers"] = [layer for layer in doc["layers"]
                         if layer["annotations"][ANNOTATION_TITLE] != MANIFEST_NAME]
        client.put_manifest(url.repository, url.tag, json.dumps(doc).encode(), OCI_MANIFEST)
        with pytest.raises(IncompleteUploadError, match=MANIFEST_NAME):
            oci.download_artifact(client, url, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_deleted_blob_is_refused_before_any_download(registry: RegistryServer, bundle: Path,
                                                     tmp_path: Path) -> None:
    url = _url(registry, "airgap/holes")
    with registry.client() as client:
        oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
        victim = build_manifest(bundle).files[-1]
        response = httpx.delete(f"{registry.url}/v2/{url.repository}/blobs/{victim.digest}")
        assert response.status_code == 202
        with pytest.raises(IncompleteUploadError, match="missing"):
            oci.download_artifact(client, url, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_download_resumes_a_partial(registry: RegistryServer, bundle: Path,
                                    tmp_path: Path) -> None:
    url = _url(registry, "airgap/resume")
    with registry.client() as client:
        oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
        manifest = oci.read_artifact(client, url)
        entry = next(f for f in manifest.files if f.name == "package-big.tar")
    out = tmp_path / "out"
    out.mkdir()
    data = (bundle / entry.name).read_bytes()
    kept = len(data) // 3
    (out / (entry.name + ".partial")).write_bytes(data[:kept])
    with FaultProxy(registry.host) as proxy, \
            RegistryClient(proxy.host, tls=TLSOptions(insecure=True)) as client:
        result = oci.download_file(client, url, entry, out)
        gets = [e for e in proxy.exchanges if e.method == "GET" and entry.digest in e.path]
    assert result.status == "resumed"
    assert (out / entry.name).read_bytes() == data
    # only the missing bytes crossed the wire: one Range GET from the end of the partial
    assert [(e.range, e.status, e.body_sent) for e in gets] == [
        (f"bytes={kept}-", 206, len(data) - kept)], gets


def test_authenticated_registry(basic_registry: RegistryServer, bundle: Path,
                                tmp_path: Path) -> None:
    url = _url(basic_registry, "airgap/auth")
    with basic_registry.client() as client:
        oci.upload_artifact(client, bundle, url, chunk_size=CHUNK)
    with RegistryClient(basic_registry.host, tls=TLSOptions(insecure=True)) as anonymous, \
            pytest.raises(UnauthorizedError) as caught:
        oci.download_artifact(anonymous, url, tmp_path / "x")
    assert "testpass" not in str(caught.value)
    assert not (tmp_path / "x").exists()
