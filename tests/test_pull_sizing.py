"""Issue 16, exact plan and disk space: a pull sized from manifests only (dry-run lines,
report), equal to what the real pull then moves and writes; the space check before fetching."""

from __future__ import annotations

import io
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.main import main
from d8mirror.bundle.tarwriter import TarMember, write_tar
from d8mirror.pull.report import PullReport
from d8mirror.pull.sizing import tar_size
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeededContent, SeedSpec, seed_packages

ROOT = "deckhouse/ee"
CHANNELS = {"alpha": "v1.1.0", "stable": "v1.0.0"}


def test_tar_size_is_the_size_write_tar_writes(tmp_path: Path) -> None:
    """Short and GNU long names, empty files, sizes on and off the 512-byte blocks."""
    members = []
    for i, size in enumerate([0, 1, 511, 512, 513, 10240, 70000]):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * size)
        name = f"packages/p/blobs/sha256/{'a' * (40 + 20 * i)}{i}"
        members.append(TarMember(name, path))
    out = io.BytesIO()
    written = write_tar(out, members)
    assert written == len(out.getvalue())
    assert tar_size({m.arcname: m.path.stat().st_size for m in members}) == written


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry of its own (request logs are read): two packages with VEX, no extras."""
    spec = SeedSpec(
        payload_size=96 << 10,
        packages=(
            PackageSpec(
                "alpha-pkg",
                ("v1.0.0", "v1.1.0"),
                channels=CHANNELS,
                internal_images=0,
                vex_versions=("v1.1.0",),
            ),
            PackageSpec("beta-pkg", ("v1.0.0", "v1.1.0"), channels=CHANNELS, internal_images=0),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("sizing-source")) as server:
        with server.client() as client:
            seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("sizing-images"))
        yield server


def _params(server: RegistryServer, bundle: Path, work: Path, **kw: object) -> object:
    from tasks.models import PullParameters

    return PullParameters(
        bundle_dir=str(bundle),
        source=f"{server.host}/{ROOT}",
        insecure=True,
        tmp_dir=str(work),
        **kw,
    )


def _blob_gets(server: RegistryServer) -> list[str]:
    return [p for m, p, s in server.requests() if m == "GET" and "/blobs/" in p and s == 200]


def _blob_bytes(store: Path, paths: list[str]) -> int:
    digests = {p.rsplit("/", 1)[1] for p in paths}
    return sum((store / d.split(":", 1)[1]).stat().st_size for d in digests)


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_sizes_equal_what_the_real_pull_moves_and_writes(
    source: RegistryServer, tmp_path: Path
) -> None:
    from flows.pull import run_pull

    work = tmp_path / "work"
    source.clear_requests()
    dry = run_pull(_params(source, tmp_path / "dry", work, dry_run=True))  # type: ignore[arg-type]
    assert dry.sizing is not None and dry.sizing.images > 0
    # Manifests only: the only blobs a dry-run GETs are the channel images its plan reads.
    assert all("/version/blobs/" in p for p in _blob_gets(source)), _blob_gets(source)
    assert dry.sizing.bytes_to_download > 0
    assert dry.sizing.bundle_free and dry.sizing.tmp_free and dry.sizing.same_filesystem

    source.clear_requests()
    real: PullReport = run_pull(_params(source, tmp_path / "bundle", work))  # type: ignore[arg-type]
    assert real.ok
    moved = _blob_bytes(work / "blobs" / "sha256", _blob_gets(source))
    assert moved == dry.sizing.bytes_to_download
    assert sum(p.bytes_fetched for p in real.packages) <= moved  # + package-versions' own
    assert sum(a.size for a in real.archives) == dry.sizing.bundle_bytes
    assert real.sizing is not None and real.sizing.bundle_bytes == dry.sizing.bundle_bytes
    assert real.sizing.bytes_to_download == dry.sizing.bytes_to_download  # no layer yet


@pytest.mark.usefixtures("prefect_server")
def test_extras_and_internal_images_are_sized_once_the_main_layers_are_stored(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """The demo names extra and internal images inside its main images' layers: a cold
    dry-run says it cannot size them; a real pull fetches its main images first and sizes
    exactly (what it then moves, what it writes); after it (a warm store) a dry-run is exact."""
    from flows.pull import run_pull

    work = tmp_path / "work"
    cold = run_pull(_params(registry, tmp_path / "dry", work, dry_run=True))  # type: ignore[arg-type]
    assert cold.sizing is not None and cold.sizing.unsized
    registry.clear_requests()
    real = run_pull(_params(registry, tmp_path / "bundle", work))  # type: ignore[arg-type]
    assert real.ok and real.sizing is not None and real.sizing.unsized == []
    archives = sum(a.size for a in real.archives)
    assert real.sizing.bundle_bytes == archives
    moved = _blob_bytes(work / "blobs" / "sha256", _blob_gets(registry))
    assert moved == real.sizing.bytes_to_download
    assert real.sizing.images > cold.sizing.images
    warm = run_pull(_params(registry, tmp_path / "dry2", work, dry_run=True))  # type: ignore[arg-type]
    assert warm.sizing is not None and warm.sizing.unsized == []
    assert warm.sizing.bytes_to_download == 0
    assert warm.sizing.bundle_bytes == archives
    assert warm.sizing.images == real.sizing.images


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_prints_sizes_and_free_space(
    source: RegistryServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")  # the dry-run prints at INFO
    bundle = tmp_path / "bundle"
    code = main(
        ["pull", str(bundle), "--source", f"{source.host}/{ROOT}", "--insecure", "--dry-run"]
    )
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert code == 0, text[-3000:]
    for what in ("package 'alpha-pkg'", "package 'beta-pkg'", "package-versions"):
        assert f"[dry-run] Size of {what}: " in text, text[-3000:]
    assert "[dry-run] Total size: " in text
    assert "to download" in text and "unique blobs" in text
    assert "[dry-run] Free space: bundle dir" in text and "tmp dir" in text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True, timeout=30
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.usefixtures("prefect_server")
def test_a_pull_that_does_not_fit_is_refused_before_writing_anything(
    source: RegistryServer,
    small_disk: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = small_disk / "bundle"
    source.clear_requests()
    code = main(["pull", str(bundle), "--source", f"{source.host}/{ROOT}", "--insecure", "--force"])
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert code == 1
    assert "not enough disk space" in text, text[-3000:]
    for hint in ("--tmp-dir", "--images-bundle-chunk-size", "--skip-space-check", str(small_disk)):
        assert hint in text
    assert _files(bundle) == []  # no archive, no partial file, no working dir left
    assert all("/version/blobs/" in p for p in _blob_gets(source))  # no layer was fetched

    # The working dir elsewhere: the bundle's filesystem alone is too small, and named.
    caplog.clear()
    work = tmp_path / "work"
    code = main(
        [
            "pull",
            str(bundle),
            "--source",
            f"{source.host}/{ROOT}",
            "--insecure",
            "--tmp-dir",
            str(work),
        ]
    )
    text = "".join(capfd.readouterr()) + caplog.text
    assert code == 1 and "bundle dir" in text and "(too small)" in text
    assert "tmp dir" in text
    assert _files(bundle) == []


@pytest.mark.usefixtures("prefect_server")
def test_skip_space_check_gets_past_the_check(
    source: RegistryServer,
    small_disk: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pull fits the 2 MiB disk but not the check's 64 MiB margin: skipped, it completes."""
    bundle = small_disk / "bundle"
    code = main(
        [
            "pull",
            str(bundle),
            "--source",
            f"{source.host}/{ROOT}",
            "--insecure",
            "--skip-space-check",
        ]
    )
    text = "".join(capfd.readouterr()) + caplog.text
    assert code == 0, text[-3000:]
    assert "not enough disk space" not in text and "Disk space check skipped" in text
    assert (bundle / "package-alpha-pkg.tar").is_file()


@pytest.mark.usefixtures("prefect_server")
def test_push_dry_run_says_what_would_be_uploaded_and_writes_nothing(
    source: RegistryServer,
    registry2: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """First push: all to upload, nothing present; after the push: all present."""
    bundle = tmp_path / "bundle"
    assert main(["pull", str(bundle), "--source", f"{source.host}/{ROOT}", "--insecure"]) == 0
    target = f"{registry2.host}/sizing-{tmp_path.name[-12:]}/ee"

    import flows.push
    from d8mirror.push.dryrun import render_push_dry_run

    seen: list[list[str]] = []

    def spy(layouts: list) -> list[str]:  # type: ignore[type-arg]
        seen.append(render_push_dry_run(layouts))
        return seen[-1]

    monkeypatch.setattr(flows.push, "render_push_dry_run", spy)

    def dry_run_total() -> tuple[list[int], str]:
        registry2.clear_requests()
        assert main(["push", str(bundle), target, "--insecure", "--dry-run"]) == 0
        writes = [r for r in registry2.requests() if r[0] in ("PUT", "POST", "PATCH", "DELETE")]
        assert writes == []
        line = seen[-1][-1]
        import re

        return [int(n) for n in re.findall(r"(\d+)(?: to| present| bytes)", line)], line

    before, line = dry_run_total()
    # tags to push, tags present, blobs to upload, bytes to upload, blobs present, bytes present
    tags, tags_there, blobs_up, bytes_up, *_ = before
    assert tags > 0 and tags_there == 0 and blobs_up > 0 and bytes_up > 0, line
    assert "present (0 B, 0 bytes)" in line
    assert main(["push", str(bundle), target, "--insecure"]) == 0
    _after, line = dry_run_total()
    assert "tags 0 to push" in line and "blobs 0 to upload (0 B, 0 bytes)" in line, line
    assert f"{blobs_up} present" in line and f"{bytes_up} bytes)" in line, line
