"""The pull's stages as the flow runs them for one package (resolve task: plan_package; fetch
task: fetch_package), for tests of the core against a real registry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.options import PullOptions
from d8mirror.pull.package import FetchResult, PackageLayouts, fetch_package
from d8mirror.pull.plan import PackagePlan, plan_package
from d8mirror.versions import PackageFilter


@dataclass
class Stages:
    fetcher: ImageFetcher
    options: PullOptions

    def including(self, *include: str) -> Stages:
        """The same source with ``--include-package`` set to ``include``."""
        return Stages(
            self.fetcher, replace(self.options, package_filter=PackageFilter.from_flags(include))
        )

    def plan(self, name: str) -> PackagePlan:
        return plan_package(self.fetcher, self.options, name)

    def pull(self, name: str, work_dir: Path) -> FetchResult:
        """Plan, then fetch into fresh layouts of ``work_dir``."""
        return fetch_package(
            self.fetcher, self.options, self.plan(name), PackageLayouts.fresh(work_dir)
        )
