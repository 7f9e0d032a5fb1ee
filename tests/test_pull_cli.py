"""``d8mirror pull`` end to end through the CLI (flags, exit codes, chunks, GOST, failures)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.main import main
from d8mirror.bundle import gost_hex_file, open_archive, verify_sidecars
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeededContent, SeedSpec, seed_packages

ROOT = "deckhouse/ee"
CHANNELS = {"alpha": "v1.1.0", "stable": "v1.0.0"}


@pytest.fixture(scope="module")
def isolated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryServer, SeededContent]]:
    """A registry of its own: tests here break and repair its storage."""
    spec = SeedSpec(
        payload_size=96 << 10,
        packages=(
            PackageSpec("alpha-pkg", ("v1.0.0", "v1.1.0"), channels=CHANNELS, internal_images=1),
            PackageSpec("beta-pkg", ("v1.0.0", "v1.1.0"), channels=CHANNELS, internal_images=1),
            PackageSpec("gamma-pkg", ("v1.0.0", "v1.1.0"), channels=CHANNELS, internal_images=1),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("cli-source")) as server:
        with server.client() as client:
            content = seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("cli-images"))
        yield server, content


def _pull(server: RegistryServer, bundle: Path, *flags: str) -> int:
    return main(["pull", str(bundle), "--source", f"{server.host}/{ROOT}", "--insecure", *flags])


def _own_layer(server: RegistryServer, package: str) -> tuple[str, str]:
    """(repository, digest) of a layer only ``package:v1.1.0`` has (not the shared base)."""
    repo = f"{ROOT}/packages/{package}"
    with server.client() as client:
        manifest = client.get_manifest(repo, "v1.1.0").json()
    return repo, str(manifest["layers"][-1]["digest"])


def test_usage_errors_exit_1_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """R-9.1/R-9.6 (exit 1 as d8): mutually exclusive filters, an empty constraint, a
    non-empty bundle dir."""
    with pytest.raises(SystemExit) as exit_info:
        main(["pull", str(tmp_path / "b"), "--include-package", "a", "--exclude-package", "b"])
    assert exit_info.value.code == 1
    assert main(["pull", str(tmp_path / "b"), "--include-package", "console@"]) == 1
    assert "quote" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    assert main(["pull", str(tmp_path / "full")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["pull", str(tmp_path / "b"), "-c", "-1"]) == 1


@pytest.mark.usefixtures("prefect_server")
def test_chunked_pull_with_gost_reassembles_to_the_plain_archive(
    isolated: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """-c with a unit, --gost-digest: exact chunks, sidecars per chunk, same bytes as unchunked."""
    server, _ = isolated
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    assert _pull(server, plain, "--include-package", "alpha-pkg") == 0
    assert (
        _pull(server, chunked, "--include-package", "alpha-pkg", "-c", "100KiB", "--gost-digest")
        == 0
    )
    chunks = sorted(chunked.glob("package-alpha-pkg.tar.*.chunk"))
    assert len(chunks) > 1 and all(c.stat().st_size == 100 * 1024 for c in chunks[:-1])
    with open_archive(chunked / "package-alpha-pkg.tar") as stream:
        joined = stream.read()
    assert joined == (plain / "package-alpha-pkg.tar").read_bytes()
    assert verify_sidecars(chunked) == []
    for chunk in chunks:
        assert (chunk.parent / (chunk.name + ".gostsum")).read_text() == gost_hex_file(chunk)


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_package_never_stops_the_others(
    isolated: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """Issue 3: every package is attempted, good ones packed, exit 1 naming the failed one;
    a rerun after the fault is fixed fetches only the failed package's blobs."""
    server, _ = isolated
    repo, digest = _own_layer(server, "beta-pkg")
    saved = tmp_path / "saved-layer"
    with server.client() as client:
        client.fetch_blob(repo, digest, saved)
        # A persistent, non-retryable fault: the registry answers 404 BLOB_UNKNOWN.
        httpx.delete(f"{server.url}/v2/{repo}/blobs/{digest}").raise_for_status()
        bundle = tmp_path / "bundle"
        try:
            assert _pull(server, bundle) == 1
        finally:
            client.upload_blob(repo, digest, saved)
    report = json.loads((bundle / "report.json").read_text())
    status = {p["name"]: p["status"] for p in report["packages"]}
    assert status == {"alpha-pkg": "pulled", "beta-pkg": "failed", "gamma-pkg": "pulled"}
    assert report["failed"] == ["beta-pkg"] and "BlobNotFound" in json.dumps(report)
    assert not (bundle / "package-beta-pkg.tar").exists()
    assert not list(bundle.glob("*.tar.tmp"))

    server.clear_requests()
    assert _pull(server, bundle, "--force") == 0
    fetched = [p for m, p, s in server.requests() if m == "GET" and "/blobs/" in p]
    assert fetched and all("/packages/beta-pkg" in p for p in fetched)
    assert (bundle / "package-beta-pkg.tar").exists()


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_exits_0_and_writes_nothing(
    isolated: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    server, _ = isolated
    bundle = tmp_path / "bundle"
    assert _pull(server, bundle, "--dry-run", "--tmp-dir", str(tmp_path / "work")) == 0
    assert not bundle.exists() or list(bundle.iterdir()) == []


@pytest.mark.usefixtures("prefect_server")
def test_cancel_packs_what_completed_and_exits_0(
    isolated: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """R-6.5 / AC-13: Ctrl+C (a real SIGINT to the CLI process) while the second package
    downloads: exit 0, the completed package is packed, no stub archive for the others, the
    report says cancelled. The second package's internal image layer is held mid-body by a
    proxy, so the signal lands at that very moment (its main images were fetched earlier, when
    the pull sized every package: see tests/test_pull_sizing.py)."""
    import signal

    from faultproxy import FaultProxy, Request
    from reliability_support import kill_hard, start_cli, wait_for

    server, content = isolated
    [internal, *_] = content.internal_digests["beta-pkg"]
    with server.client() as client:
        internal_manifest = client.get_manifest(f"{ROOT}/packages/beta-pkg", internal).json()
    held_layer = str(internal_manifest["layers"][-1]["digest"])

    def beta_layer(request: Request) -> bool:
        return request.method == "GET" and request.path.endswith(
            f"/packages/beta-pkg/blobs/{held_layer}"
        )

    bundle, log = tmp_path / "bundle", tmp_path / "cli.log"
    with FaultProxy(server.host, hold=beta_layer, hold_timeout=300) as proxy:
        child = start_cli(
            [
                "pull",
                str(bundle),
                "--source",
                f"{proxy.host}/{ROOT}",
                "--insecure",
                "--concurrency",
                "1",
            ],
            log,
            PREFECT_LOGGING_LEVEL="INFO",
        )  # the CLI's default level
        try:
            wait_for(
                lambda: proxy.holding >= 1,
                timeout=180,
                what="beta-pkg's layer held",
                process=child,
                log=log,
            )
            os.kill(child.pid, signal.SIGINT)  # what Ctrl+C sends to the foreground CLI
            # the handler's notice (printed inside the flow run, so it arrives as a run log)
            wait_for(
                lambda: "Operation cancelled by user" in log.read_text(errors="replace"),
                timeout=60,
                what="the CLI to take the stop request",
                process=child,
                log=log,
            )
            proxy.release()
            code = child.wait(timeout=180)
        finally:
            proxy.release()
            kill_hard(child)
    assert code == 0, log.read_text()[-3000:]
    report = json.loads((bundle / "report.json").read_text())
    assert report["status"] == "cancelled"
    status = {p["name"]: p["status"] for p in report["packages"]}
    assert status == {"alpha-pkg": "pulled", "beta-pkg": "cancelled", "gamma-pkg": "cancelled"}
    assert sorted(p.name for p in bundle.glob("*.tar")) == ["package-alpha-pkg.tar"]


@pytest.mark.usefixtures("prefect_server")
def test_pull_with_upload_to_s3_in_one_run(
    isolated: tuple[RegistryServer, SeededContent], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 6: ``pull --upload-to s3://…`` pulls, then uploads and verifies every file."""
    import boto3
    from transfer_support import moto_endpoint

    from d8mirror.transfer import MANIFEST_NAME

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server, _ = isolated
    bundle = tmp_path / "bundle"
    with moto_endpoint() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="airgap")
        assert (
            _pull(
                server,
                bundle,
                "--include-package",
                "gamma-pkg",
                "--upload-to",
                "s3://airgap/site",
                "--upload-endpoint-url",
                endpoint,
            )
            == 0
        )
        remote: dict[str, tuple[bytes, str | None]] = {}
        for listed in s3.list_objects_v2(Bucket="airgap")["Contents"]:
            got = s3.get_object(Bucket="airgap", Key=listed["Key"])
            remote[listed["Key"]] = (got["Body"].read(), got["Metadata"].get("sha256"))
    local = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir() if p.is_file()
    }
    assert {
        "package-gamma-pkg.tar",
        "package-gamma-pkg.tar.sha256",
        "package-versions.tar",
        "report.json",
    } <= set(local)
    # every file of the bundle is there, byte for byte, with the checksum it was verified by
    assert set(remote) == {f"site/{name}" for name in local} | {f"site/{MANIFEST_NAME}"}
    for name, sha256 in local.items():
        data, recorded = remote[f"site/{name}"]
        assert (hashlib.sha256(data).hexdigest(), recorded) == (sha256, sha256), name
    # the manifest (written last) lists exactly those files and checksums
    manifest = json.loads(remote[f"site/{MANIFEST_NAME}"][0])
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == local
