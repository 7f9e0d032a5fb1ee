"""The pull summary (R-9.4) and report.json, rendered from plain data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from d8mirror.errors import DiskSpaceError
from d8mirror.pull.report import (
    REPORT_FILE,
    ArchiveStat,
    PackageOutcome,
    PullReport,
    render_summary,
)


def _report(**extra: object) -> PullReport:
    report = PullReport(
        source="registry.example.com/deckhouse/ee",
        packages=[
            PackageOutcome(
                name="console", status="pulled", versions=["v1.44.0", "v1.45.2"], images=9, vex=2
            ),
            PackageOutcome(name="code", status="pulled", versions=["v1.6.5"], images=3),
        ],
        archives=[
            ArchiveStat(name="package-code.tar", size=3 << 20),
            ArchiveStat(name="package-console.tar", size=5 << 30, chunks=2),
        ],
        elapsed_seconds=192,
    )
    for key, value in extra.items():
        setattr(report, key, value)
    return report


def test_summary_counts_packages_vex_and_sorts_versions_newest_first() -> None:
    text = render_summary(_report())
    assert text.splitlines()[0].startswith("╔══ Pull summary ")
    assert "║ Packages:   2  ·  2 VEXes" in text  # d8: `Packages:   1`
    assert "║     console                         (2 VEX)  [v1.45.2, v1.44.0]" in text
    assert "║     code                            [v1.6.5]" in text  # no "(0 VEX)"
    assert "║ Bundle artifacts (3 files)" in text  # chunks counted
    assert "║   package-console.tar               5.0 GiB  (2 chunks)" in text
    assert "TOTAL" in text and "Elapsed: 3m12s" in text and "Pull completed." in text


def test_failed_and_dry_run_summaries() -> None:
    failed = _report()
    failed.packages.append(
        PackageOutcome(name="broken", status="failed", error="BlobNotFoundError: x")
    )
    text = render_summary(failed)
    assert text.startswith("╔══ Pull failed") and "failed packages: broken" in text
    assert "broken: BlobNotFoundError: x" in text
    plan = render_summary(_report(dry_run=True))
    assert plan.startswith("╔══ Pull plan (dry-run)") and "No images were downloaded" in plan
    assert "Bundle artifacts" not in plan


def test_report_json_is_written_atomically_with_status(tmp_path: Path) -> None:
    report = _report(cancelled=True)
    path = report.write(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["status"] == "cancelled" and doc["failed"] == []
    assert [p["name"] for p in doc["packages"]] == ["console", "code"]
    assert list(tmp_path.iterdir()) == [path]


def test_report_on_a_full_disk_names_the_path_and_leaves_no_temp_file(tmp_path: Path) -> None:
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs here (needs root): {done.stderr.strip()}")
    try:
        (mount / "filler").write_bytes(b"x" * 4096)
        with pytest.raises(DiskSpaceError, match="disk space exhausted while writing") as caught:
            _report().write(mount)
        assert str(mount / REPORT_FILE) in str(caught.value)
        assert sorted(p.name for p in mount.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)
