"""mirror-scaleout: mirror-pull spread over workers, one child flow run per package.

    discover packages ─▶ per package (bounded): run_deployment(mirror-package) on a work pool
    ─▶ release images ─▶ pack package-versions.tar ─▶ report.json + artifacts + event

Children write ``package-<name>.tar`` into the shared bundle dir and their outcome into the
shared work dir; the parent only packs ``package-versions.tar`` and the report. So every worker
must see ``bundle_dir`` (and ``tmp_dir``) at the same path: NFS, a shared volume or a PVC.
A failed child never stops the others; the parent ends Failed naming the package, and its Retry
re-runs children whose fetches then come back Cached except the failed one.
A delta scale-out (``delta_from``): the parent verifies the receipt and hands its verified
copy to the children (in the shared work dir); the parent writes ``delta.json`` once, after
every child, for all their archives.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from d8mirror.pull.delta import remove_delta
from d8mirror.pull.report import PackageOutcome, PullReport
from flows.bounded import submit_bounded, task_runner
from flows.pull import PackageVersions, describe_delta, finish, prepare, pulled_names
from flows.states import error_text
from tasks.cache import cache_in_use, collect_cache_task, keeps_cache
from tasks.models import MirrorPackageParameters, PullParameters, ScaleOutParameters
from tasks.pull import discover_packages_task, remove_default_work_dir, run_package_flow_task
from tasks.runtime import forget_base_blobs


def child_parameters(params: ScaleOutParameters, name: str) -> MirrorPackageParameters:
    """mirror-package parameters for ``name``, keeping its constraint from include_packages."""
    selector = next((p for p in params.include_packages if p.partition("@")[0] == name), name)
    fields = params.model_dump(
        exclude={
            "package_deployment",
            "child_timeout_seconds",
            "include_packages",
            "exclude_packages",
        }
    )
    # The parent writes delta.json once, for every child's package.
    return MirrorPackageParameters(**fields, package=selector, describe_delta=False)


def _outcome(name: str, future: PrefectFuture[PackageOutcome]) -> PackageOutcome:
    if not future.state.is_completed():
        return PackageOutcome(name=name, status="failed", error=error_text(future.state))
    return future.result()


def _run_child(params: ScaleOutParameters, name: str) -> PrefectFuture[PackageOutcome]:
    return run_package_flow_task.submit(
        params.package_deployment,
        child_parameters(params, name),
        name,
        params.child_timeout_seconds,
    )


@flow(name="mirror-scaleout", task_runner=task_runner(), log_prints=True)
def mirror_scaleout(params: ScaleOutParameters) -> PullReport:
    """Pull like mirror-pull with one mirror-package flow run per package (see the module):
    at most ``concurrency`` children at once. With a kept cache, a successful run then
    collects it as mirror-pull does (:mod:`d8mirror.cache_gc`)."""
    started = time.monotonic()
    pull = PullParameters(
        **params.model_dump(exclude={"package_deployment", "child_timeout_seconds"})
    )
    work_existed = pull.work_root().exists()
    run = flow_run.get_id()
    try:
        with cache_in_use(pull, None if run is None else str(run)) as cache_lock:
            report, versions = _pull_through_children(params, pull, started)
            if not report.cancelled and keeps_cache(pull) and run is not None:
                # Its record: the children's layouts and what this run read itself (the
                # children's own reads, e.g. index manifests, are not in it: the next run
                # asks the source for those again).
                cache_lock.release()
                collect_cache_task(pull, str(run), *pulled_names(report, versions))
    finally:
        if run is not None:
            forget_base_blobs(str(run))  # a delta pull's base receipt, read once per run
    if not report.cancelled:  # every child has ended: the shared working dir is done with
        remove_default_work_dir(pull, existed=work_existed)
    return report


def _pull_through_children(
    params: ScaleOutParameters, pull: PullParameters, started: float
) -> tuple[PullReport, PackageVersions]:
    """Children for the packages, release images here, then the report (raises PullFailed
    naming failed packages, as mirror-pull does)."""
    pull = prepare(pull)
    params = params.model_copy(update={"delta_base": pull.delta_base})  # children: verified
    if not pull.dry_run:
        remove_delta(Path(pull.bundle_dir))
    report = PullReport(
        source=pull.source,
        dry_run=pull.dry_run,
        packages_skipped=not pull.options().per_package_phase,
    )
    if pull.options().per_package_phase:
        found = discover_packages_task(pull)
        report.warnings += found.warnings
        futures = submit_bounded(
            lambda name: _run_child(params, name), found.names, params.concurrency
        )
        report.packages = [_outcome(n, f) for n, f in zip(found.names, futures, strict=True)]
    versions = PackageVersions(pull)
    versions.discover()
    versions.finish(report)
    describe_delta(pull, report, versions.pulled)
    finish(pull, report, started)
    return report, versions
