"""kill -9 of the CLI (a child process) during blob fetch, during packing and during a push's
blob upload: the rerun completes, no archive under its final name is ever partial, and the
rerun fetches (uploads) again at most what was in flight at the kill (counted at the proxy and
at the registry)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request
from reliability_support import kill_hard, run_cli, start_cli, tags_and_digests, wait_for

from d8mirror.bundle import verify_sidecars
from d8mirror.verify import verify_bundle
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeededContent, SeedSpec, seed_packages

ROOT = "crash/ee"
pytestmark = pytest.mark.usefixtures("prefect_server")
_ns = itertools.count()


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryServer, SeededContent]]:
    """One package with several versions (so several blobs in flight) and a big payload in
    another (so packing takes long enough to be caught)."""
    spec = SeedSpec(
        payload_size=256 << 10,
        shared_layer_fraction=0.25,
        packages=(
            PackageSpec(
                "many",
                ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"),
                channels={
                    "alpha": "v1.3.0",
                    "beta": "v1.2.0",
                    "stable": "v1.1.0",
                    "rock-solid": "v1.0.0",
                },
                internal_images=2,
            ),
        ),
    )
    big = SeedSpec(
        payload_size=48 << 20,
        shared_layer_fraction=0.0,
        seed=1,
        packages=(
            PackageSpec("big", ("v2.0.0",), channels={"stable": "v2.0.0"}, internal_images=0),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("crash-source")) as server:
        images = tmp_path_factory.mktemp("crash-images")
        with server.client() as client:
            content = seed_packages(client, ROOT, spec, images)
            seed_packages(client, ROOT, big, images)
        yield server, content


def _blob_digest(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _is_blob_get(request: Request) -> bool:
    return request.method == "GET" and "/blobs/sha256:" in request.path


def _assert_no_partial_archive(bundle: Path) -> None:
    """Every file under a final archive name is whole: its sidecar verifies (a missing
    sidecar only means the kill came between two renames of one commit)."""
    for archive in bundle.glob("package-*.tar"):
        sidecar = archive.with_name(archive.name + ".sha256")
        if sidecar.is_file():
            assert verify_sidecars(bundle) == [], archive
        else:
            import tarfile

            with tarfile.open(archive) as tar:  # readable to the end
                assert tar.getmembers()


def test_kill_during_fetch_then_rerun_fetches_only_what_was_in_flight(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    server, _ = source
    bundle, log = tmp_path / "bundle", tmp_path / "cli.log"
    store = bundle / ".tmp" / "blobs" / "sha256"
    first_blobs = 5
    started: list[str] = []

    def hold_after_first(request: Request) -> bool:
        if not _is_blob_get(request):
            return False
        started.append(request.path)
        return len(started) > first_blobs

    with FaultProxy(server.host, hold=hold_after_first) as proxy:
        args = [
            "pull",
            str(bundle),
            "--source",
            f"{proxy.host}/{ROOT}",
            "--insecure",
            "--include-package",
            "many",
            "--blob-workers",
            "3",
        ]
        child = start_cli(args, log)
        try:

            def committed_and_held() -> bool:
                done = proxy.completed("GET", "/blobs/sha256:")
                return (
                    proxy.holding >= 1
                    and len(done) >= first_blobs
                    and all((store / _blob_digest(e.path).split(":")[1]).is_file() for e in done)
                )

            wait_for(
                committed_and_held,
                timeout=90,
                what="blobs committed and one held",
                process=child,
                log=log,
            )
        finally:
            kill_hard(child)
        before_done = {_blob_digest(e.path) for e in proxy.completed("GET", "/blobs/sha256:")}
        in_flight = {_blob_digest(p) for p in started} - before_done
        proxy.release()
    assert in_flight, "nothing was in flight at the kill"
    assert not list(bundle.glob("package-*.tar")), "no archive before packing"

    with FaultProxy(server.host) as proxy:
        args[3] = f"{proxy.host}/{ROOT}"
        assert run_cli([*args, "--force"], log) == 0, log.read_text()[-3000:]
        refetched = [e for e in proxy.exchanges if "/blobs/sha256:" in e.path and e.method == "GET"]
    refetched_digests = {_blob_digest(e.path) for e in refetched}
    assert not refetched_digests & before_done, "a blob fetched before the kill came again"
    # blobs this small (< 1 MiB, the write unit) had nothing on disk yet: fetched whole again
    assert refetched_digests >= in_flight
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()


def test_kill_mid_blob_resumes_by_range_and_kill_during_packing_leaves_no_partial_archive(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """A 48 MiB layer: kill with half of it received, rerun resumes from the bytes on disk;
    kill that rerun while it packs, the next rerun fetches nothing and completes."""
    server, _ = source
    bundle, log = tmp_path / "bundle", tmp_path / "cli.log"
    with server.client() as client:
        layer = client.get_manifest(f"{ROOT}/packages/big", "v2.0.0").json()["layers"][-1]
    digest, size = str(layer["digest"]), int(layer["size"])
    partial = bundle / ".tmp" / "blobs" / "incoming" / f"{digest.split(':')[1]}.partial"
    staged = bundle / "package-big.tar.tmp"

    with FaultProxy(
        server.host, hold=lambda r: r.method == "GET" and r.path.endswith(digest)
    ) as proxy:
        args = [
            "pull",
            str(bundle),
            "--source",
            f"{proxy.host}/{ROOT}",
            "--insecure",
            "--include-package",
            "big",
            "--force",
        ]
        child = start_cli(args, log)
        try:
            wait_for(
                lambda: (
                    proxy.holding >= 1
                    and partial.is_file()
                    and partial.stat().st_size >= size // 2 - (1 << 20)
                ),
                timeout=120,
                what="half of the big layer on disk",
                process=child,
                log=log,
            )
        finally:
            kill_hard(child)
        on_disk = partial.stat().st_size
        proxy.release()
        before = len(proxy.exchanges)

        child = start_cli(args, log)  # rerun, killed while packing
        try:
            wait_for(
                lambda: staged.is_file() and staged.stat().st_size > (1 << 20),
                timeout=120,
                what="package-big.tar.tmp being written",
                process=child,
                log=log,
            )
        finally:
            kill_hard(child)
        assert not (bundle / "package-big.tar").exists(), "archive renamed before it was whole"
        _assert_no_partial_archive(bundle)
        rerun = [e for e in proxy.exchanges[before:] if e.path.endswith(digest)]
        assert [e.range for e in rerun] == [f"bytes={on_disk}-"]
        assert rerun[0].body_sent == size - on_disk  # only the missing half again
        before = len(proxy.exchanges)

        assert run_cli(args, log) == 0, log.read_text()[-3000:]
        assert not [e for e in proxy.exchanges[before:] if "/blobs/" in e.path], (
            "the rerun after the packing kill fetched blobs again"
        )
    assert not staged.exists()
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()


def test_kill_during_push_upload_then_rerun_uploads_only_the_rest(
    source: tuple[RegistryServer, SeededContent], registry2: RegistryServer, tmp_path: Path
) -> None:
    server, _ = source
    bundle, log = tmp_path / "bundle", tmp_path / "cli.log"
    assert (
        run_cli(
            [
                "pull",
                str(bundle),
                "--source",
                f"{server.host}/{ROOT}",
                "--insecure",
                "--include-package",
                "many",
            ],
            log,
        )
        == 0
    ), log.read_text()[-3000:]
    n = next(_ns)
    clean_root, crash_root = f"push-clean-{n}/ee", f"push-crash-{n}/ee"
    with FaultProxy(registry2.host) as proxy:  # a clean push, counting its uploads
        assert run_cli(["push", str(bundle), f"{proxy.host}/{clean_root}", "--insecure"], log) == 0
        total_uploads = len(proxy.completed("PUT", "/blobs/uploads/"))
    first_uploads = 4
    finishing: list[str] = []

    def hold_upload_finish(request: Request) -> bool:
        if request.method != "PUT" or "/blobs/uploads/" not in request.path:
            return False
        finishing.append(request.path)
        return len(finishing) > first_uploads

    with FaultProxy(registry2.host, hold=hold_upload_finish) as proxy:
        push = [
            "push",
            str(bundle),
            f"{proxy.host}/{crash_root}",
            "--insecure",
            "--concurrency",
            "2",
            "--blob-workers",
            "2",
        ]
        child = start_cli(push, log)
        try:
            wait_for(
                lambda: (
                    proxy.holding >= 1
                    and len(proxy.completed("PUT", "/blobs/uploads/")) >= first_uploads
                ),
                timeout=90,
                what="uploads done and one held",
                process=child,
                log=log,
            )
        finally:
            kill_hard(child)
        uploaded_before = len(proxy.completed("PUT", "/blobs/uploads/"))
        held = proxy.holding
        proxy.release()
    with FaultProxy(registry2.host) as proxy:
        push[2] = f"{proxy.host}/{crash_root}"
        assert run_cli(push, log) == 0, log.read_text()[-3000:]
        uploaded_after = len(proxy.completed("PUT", "/blobs/uploads/"))
    clean = tags_and_digests(registry2, clean_root)
    assert clean and tags_and_digests(registry2, crash_root) == clean
    # what finished before the kill is not uploaded again: only the held ones are redone
    assert uploaded_before >= first_uploads
    assert uploaded_before + uploaded_after <= total_uploads + held, (
        uploaded_before,
        uploaded_after,
        total_uploads,
        held,
    )
