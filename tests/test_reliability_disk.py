"""Disk full: a pull into a size-capped tmpfs fails with a "disk space" error naming the path,
and leaves nothing half-written under a final name."""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.main import main
from d8mirror.bundle import verify_sidecars
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(params=["1m", "3m"], ids=["full-while-fetching", "full-while-packing"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def _final_names_are_whole(bundle: Path) -> None:
    for archive in bundle.glob("package-*.tar"):
        with tarfile.open(archive) as tar:
            tar.getmembers()
    assert verify_sidecars(bundle) == []
    leftovers = [
        p.name for p in bundle.iterdir() if p.is_file() and (p.name.endswith((".tmp", ".partial")))
    ]
    assert leftovers == []


def test_pull_onto_a_full_disk_names_the_path_and_writes_nothing_half(
    registry: RegistryServer,
    demo_content: SeededContent,
    small_disk: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = small_disk / "bundle"
    # Past the space check (it would refuse this disk before fetching: tests/test_pull_sizing.py)
    code = main(
        [
            "pull",
            str(bundle),
            "--source",
            f"{registry.host}/deckhouse/ee",
            "--insecure",
            "--skip-space-check",
        ]
    )
    out, err = capfd.readouterr()
    assert code == 1
    text = out + err + caplog.text  # the CLI's last line names the packages, the log why
    assert "disk space exhausted while writing" in text, text[-3000:]
    assert str(small_disk) in text
    _final_names_are_whole(bundle)
    store = bundle / ".tmp" / "blobs" / "sha256"
    from d8mirror.hashing import sha256_file_digest

    for blob in store.iterdir() if store.is_dir() else []:
        assert sha256_file_digest(blob) == f"sha256:{blob.name}", "a half-written blob"
