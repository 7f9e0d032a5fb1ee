"""OCI-artifact transfer through the product path: the upload-bundle and download-bundle flows
(Prefect test harness) against the real registry (Debian docker-registry on 127.0.0.1).

Interop: skopeo reads the manifest as a valid OCI artifact with title annotations, and
oras-py's ``pull`` (what ``oras pull`` does) restores the files by name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultproxy import FaultProxy, Request, Response
from transfer_support import file_rows, make_bundle, statuses

from d8mirror.errors import UnauthorizedError
from d8mirror.mediatypes import ANNOTATION_TITLE, OCI_EMPTY, OCI_MANIFEST
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.errors import IncompleteUploadError
from d8mirror.transfer.manifest import MANIFEST_NAME, build_manifest
from flows.transfer import download_bundle, upload_bundle
from tasks.transfer_models import DownloadParameters, TransferSummary, UploadParameters
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")
CHUNK_MIB = 5
CHUNK = CHUNK_MIB << 20
BIG = "package-big.tar"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("oci-bundle"), big=3 * CHUNK + 7)


@pytest.fixture(autouse=True)
def anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("D8_MIRROR_REGISTRY_LOGIN", "D8_MIRROR_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _url(host: str, repo: str, tag: str = "2024-06-01") -> str:
    return f"oci://{host}/{repo}:{tag}"


def _upload(bundle: Path, url: str, **extra: Any) -> Any:
    """The upload-bundle run's final state."""
    return upload_bundle(
        UploadParameters(
            bundle_dir=str(bundle), url=url, insecure=True, part_size_mib=CHUNK_MIB, **extra
        ),
        return_state=True,
    )


def _download(url: str, dest: Path, **extra: Any) -> Any:
    return download_bundle(
        DownloadParameters(dest_dir=str(dest), url=url, insecure=True, **extra), return_state=True
    )


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert sorted(p.name for p in b.iterdir() if p.name != MANIFEST_NAME) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_round_trip_chunked_and_byte_identical(
    registry: RegistryServer, bundle: Path, tmp_path: Path
) -> None:
    url = _url(registry.host, "airgap/round-trip")
    registry.clear_requests()
    up = _upload(bundle, url)
    assert up.is_completed(), up
    summary: TransferSummary = up.result()
    assert set(statuses(file_rows(up)).values()) == {"uploaded"}
    assert summary.digest is not None and summary.digest.startswith("sha256:")
    # only the big file (3 chunks + 7 bytes) goes in pieces
    assert registry.count("PATCH", "/airgap/round-trip/blobs/uploads/") == 4
    out = tmp_path / "out"
    down = _download(url, out)
    assert down.is_completed(), down
    assert set(statuses(file_rows(down)).values()) == {"downloaded"}
    _same_files(bundle, out)
    assert (out / MANIFEST_NAME).read_bytes() == build_manifest(bundle).to_bytes()


def test_reupload_skips_blobs_and_keeps_digest(registry: RegistryServer, bundle: Path) -> None:
    url = _url(registry.host, "airgap/again")
    first = _upload(bundle, url).result().digest
    registry.clear_requests()
    again = _upload(bundle, url)
    assert set(statuses(file_rows(again)).values()) == {"skipped"}
    assert again.result().digest == first
    assert registry.count("PATCH", "/blobs/uploads/") == 0
    assert registry.count("PUT", "/blobs/uploads/") == 0


def test_manifest_is_a_valid_oras_artifact(registry: RegistryServer, bundle: Path) -> None:
    url = _url(registry.host, "airgap/interop")
    assert _upload(bundle, url).is_completed()
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry.host}/airgap/interop:2024-06-01",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    doc = json.loads(raw)
    assert doc["mediaType"] == OCI_MANIFEST
    assert doc["artifactType"] == oci.ARTIFACT_TYPE
    assert doc["config"] == {"mediaType": OCI_EMPTY, "digest": oci.EMPTY_DIGEST, "size": 2}
    titles = [layer["annotations"][ANNOTATION_TITLE] for layer in doc["layers"]]
    assert titles == [*build_manifest(bundle).names(), MANIFEST_NAME]
    types = {layer["annotations"][ANNOTATION_TITLE]: layer["mediaType"] for layer in doc["layers"]}
    assert types[BIG] == oci.ARCHIVE_TYPE
    assert types[BIG + ".sha256"] == "text/plain"


def test_oras_py_pull_restores_the_files(
    registry: RegistryServer, bundle: Path, tmp_path: Path
) -> None:
    import oras.client

    assert _upload(bundle, _url(registry.host, "airgap/oras-pull")).is_completed()
    oras_client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    out = tmp_path / "oras"
    oras_client.pull(target=f"{registry.host}/airgap/oras-pull:2024-06-01", outdir=str(out))
    _same_files(bundle, out)


def test_missing_tag_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    state = _download(_url(registry.host, "airgap/nothing"), tmp_path / "a")
    with pytest.raises(IncompleteUploadError, match="no artifact"):
        state.result()
    assert not (tmp_path / "a").exists()


def test_artifact_without_transfer_manifest_is_refused(
    registry: RegistryServer, bundle: Path, tmp_path: Path
) -> None:
    assert _upload(bundle, _url(registry.host, "airgap/no-manifest", "full")).is_completed()
    manifest = build_manifest(bundle)
    doc = json.loads(oci.artifact_manifest(manifest, manifest.files[0]))
    doc["layers"] = [
        layer for layer in doc["layers"] if layer["annotations"][ANNOTATION_TITLE] != MANIFEST_NAME
    ]
    with registry.client() as client:
        client.put_manifest("airgap/no-manifest", "cut", json.dumps(doc).encode(), OCI_MANIFEST)
    state = _download(_url(registry.host, "airgap/no-manifest", "cut"), tmp_path / "b")
    with pytest.raises(IncompleteUploadError, match=MANIFEST_NAME):
        state.result()
    assert not (tmp_path / "b").exists()


def test_deleted_blob_is_refused_before_any_download(
    registry: RegistryServer, bundle: Path, tmp_path: Path
) -> None:
    url = _url(registry.host, "airgap/holes")
    assert _upload(bundle, url).is_completed()
    victim = build_manifest(bundle).files[-1]
    response = httpx.delete(f"{registry.url}/v2/airgap/holes/blobs/{victim.digest}")
    assert response.status_code == 202
    state = _download(url, tmp_path / "b")
    with pytest.raises(IncompleteUploadError, match="missing"):
        state.result()
    assert not (tmp_path / "b").exists()


def test_download_resumes_a_partial(registry: RegistryServer, bundle: Path, tmp_path: Path) -> None:
    assert _upload(bundle, _url(registry.host, "airgap/resume")).is_completed()
    entry = next(f for f in build_manifest(bundle).files if f.name == BIG)
    out = tmp_path / "out"
    out.mkdir()
    data = (bundle / BIG).read_bytes()
    kept = len(data) // 3
    (out / (BIG + ".partial")).write_bytes(data[:kept])
    with FaultProxy(registry.host) as proxy:
        state = _download(_url(proxy.host, "airgap/resume"), out)
        gets = [e for e in proxy.exchanges if e.method == "GET" and entry.digest in e.path]
    assert state.is_completed(), state
    rows = statuses(file_rows(state))
    assert rows.pop(BIG) == "resumed"
    assert set(rows.values()) == {"downloaded"}
    assert (out / BIG).read_bytes() == data
    # only the missing bytes crossed the wire: one Range GET from the end of the partial
    assert [(e.range, e.status, e.body_sent) for e in gets] == [
        (f"bytes={kept}-", 206, len(data) - kept)
    ], gets


def test_authenticated_registry(
    basic_registry: RegistryServer, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(basic_registry.host, "airgap/auth")
    monkeypatch.setenv("D8_MIRROR_REGISTRY_LOGIN", "testuser")
    monkeypatch.setenv("D8_MIRROR_REGISTRY_PASSWORD", "testpass")
    assert _upload(bundle, url).is_completed()
    monkeypatch.delenv("D8_MIRROR_REGISTRY_LOGIN")
    monkeypatch.delenv("D8_MIRROR_REGISTRY_PASSWORD")
    state = _download(url, tmp_path / "x")
    with pytest.raises(UnauthorizedError) as caught:
        state.result()
    assert "testpass" not in str(caught.value)
    assert not (tmp_path / "x").exists()


def test_files_in_flight_follow_file_concurrency(registry: RegistryServer, tmp_path: Path) -> None:
    """The flow itself bounds its files by ``file_concurrency``, as a deployment run or the
    UI's Retry calls it (no per-call task runner): 3 here, above the old fixed 2, never more."""
    bundle = make_bundle(tmp_path / "src", big=1000)
    lock = threading.Lock()
    in_flight = peak = 0

    def slow_start(request: Request) -> Response | None:
        nonlocal in_flight, peak
        if request.method == "POST" and request.path.endswith("/blobs/uploads/"):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.5)  # each file's upload session opens slowly
            with lock:
                in_flight -= 1
        return None

    with FaultProxy(registry.host, intercept=slow_start) as proxy:
        state = _upload(bundle, _url(proxy.host, "airgap/bounded"), file_concurrency=3)
    assert state.is_completed(), state
    assert len(build_manifest(bundle).files) > 3
    assert peak == 3
