"""Pull modes against the demo corpus: ``--only-extra-images`` takes VEX of the extras only
(issue 12.10), ``--dry-run`` prints each package's plan as d8 does (issue 12.11)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pull_stages import Stages

from d8mirror.blobstore import BlobStore
from d8mirror.layout import Layout
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.options import PullOptions
from d8mirror.reference import Repository
from d8mirror.versions import PackageFilter
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

ROOT = "deckhouse/ee"


class _Collect(logging.Handler):
    """The flow run's log messages, as the CLI prints them."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_only_extra_images_pulls_vex_of_the_extras_only(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """R-3.6 / R-1.4: with --only-extra-images the main image's ``v1.1.0.att`` (it exists) is
    not pulled; the scanner extra's ``v1.2.3.att`` is."""
    assert "v1.1.0.att" in demo_content.tags(f"{ROOT}/packages/console")
    include = PackageFilter.from_flags(["console@=v1.1.0"])
    options = PullOptions(
        source=Repository.parse(f"{registry.host}/{ROOT}"),
        package_filter=include,
        only_extra_images=True,
    )
    puller = Stages(ImageFetcher(registry.client(), BlobStore(tmp_path / "store")), options)
    result = puller.pull("console", tmp_path / "work")
    main = {e.short_tag for e in Layout.open(tmp_path / "work").entries()}
    assert main == {"v1.2.3.att"}
    assert result.vex == 1
    extras = sorted(p.name for p in (tmp_path / "work" / "extra").iterdir())
    assert extras == ["enforcer", "scanner"]


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_prints_the_images_of_each_package(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """R-6.7: ``[dry-run] Package '<name>' images that would be pulled:`` then one indented
    ref a line, then the note on extra images; packages in name order."""
    from flows.pull import run_pull
    from tasks.models import PullParameters

    lines: list[str] = []
    handler = _Collect(lines)
    flow_logger = logging.getLogger("prefect.flow_runs")
    level = flow_logger.level
    flow_logger.setLevel(logging.INFO)  # setLevel, not .level: it clears isEnabledFor's cache
    flow_logger.addHandler(handler)
    try:
        run_pull(
            PullParameters(
                bundle_dir=str(tmp_path / "bundle"),
                source=f"{registry.host}/{ROOT}",
                insecure=True,
                dry_run=True,
                include_packages=["console", "stronghold@=v0.4.0"],
                tmp_dir=str(tmp_path / "work"),
            )
        )
    finally:
        flow_logger.removeHandler(handler)
        flow_logger.setLevel(level)
    text = "\n".join(lines)
    base = f"{registry.host}/{ROOT}/packages"
    console = "\n".join(
        [
            "[dry-run] Package 'console' images that would be pulled:",
            *[
                f"  {base}/console/version:{c}"
                for c in ("alpha", "beta", "early-access", "stable", "rock-solid")
            ],
            f"  {base}/console:v1.2.0",
            f"  {base}/console/version:v1.2.0",
            f"  {base}/console:v1.1.0",
            f"  {base}/console/version:v1.1.0",
            f"  {base}/console:v1.1.0.att",
            f"  {base}/console:v1.0.1",
            f"  {base}/console/version:v1.0.1",
            "  (extra images discovery requires a real pull)",
        ]
    )
    assert console in text
    stronghold = "\n".join(
        [
            "[dry-run] Package 'stronghold' images that would be pulled:",
            f"  {base}/stronghold:v0.4.0",
            f"  {base}/stronghold/version:v0.4.0",
            "  (extra images discovery requires a real pull)",
        ]
    )
    assert stronghold in text
    assert text.index("Package 'console'") < text.index("Package 'stronghold'")
    assert (
        "[dry-run] package-versions archive would contain release images for: "
        "code, console, stronghold" in text
    )
