"""mirror-pull: Deckhouse packages from a source registry into a bundle directory.

    discover packages ─▶ per package (mapped, bounded): resolve ─▶ fetch ─▶ pack
                      └▶ per package: release images ─▶ pack package-versions.tar
    ─▶ report.json + summary and table artifacts ─▶ Failed if any package failed

A failed package never stops the others; the run ends Failed and names it, and the UI's Retry
re-runs only what failed (fetches are cached by content, blobs come from the shared store).
A complete bundle emits the event ``d8mirror.bundle.completed`` (automations chain push/upload).

mirror-package: one package (re-)fetched and packed into an existing bundle directory; its
outcome is also written to ``<work_root>/state/<name>.outcome.json`` for a scale-out parent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import ThreadPoolTaskRunner

from d8mirror.bundle import bundle_stats
from d8mirror.bundle.checksums import write_gost_sidecars
from d8mirror.errors import MirrorError
from d8mirror.pull.discovery import validate_proxy_mode
from d8mirror.pull.package import render_dry_run_plan
from d8mirror.pull.report import (
    ArchiveStat,
    PackageOutcome,
    PullReport,
    edition_of,
    render_summary,
)
from flows.states import error_text
from flows.transfer import upload_bundle
from tasks import runtime
from tasks.credentials import source_credentials
from tasks.models import MirrorPackageParameters, PullParameters
from tasks.pull import (
    discover_packages_task,
    fetch_package_task,
    outcome_file,
    pack_package_task,
    pack_versions_task,
    pull_release_images_task,
    remove_default_work_dir,
    resolve_package_task,
)
from tasks.runtime import stop_requested
from tasks.transfer_models import UploadParameters

COMPLETED_EVENT = "d8mirror.bundle.completed"
#: d8's warning for --skip-vex-images (internal/mirror/pull.go), word for word.
SKIP_VEX_WARNING = ("The skip-vex-images flag was detected: Vulnerability scanning may not work "
                    "correctly when this flag is used.")


class PullFailed(Exception):
    """Raised at the end of a pull in which packages failed; names them."""



def _outcome(name: str, plan: PrefectFuture[Any], fetch: PrefectFuture[Any],
             pack: PrefectFuture[Any] | None, dry_run: bool) -> PackageOutcome:
    state = fetch.state
    if not state.is_completed():
        status = "cancelled" if stop_requested() else "failed"
        cause = plan.state if not plan.state.is_completed() else state  # the real error
        return PackageOutcome(name=name, status=status, error=error_text(cause))
    fetched = state.result()
    outcome = PackageOutcome(name=name, status="planned" if dry_run else "pulled",
                             versions=fetched["versions"], images=fetched["images"],
                             vex=fetched["vex"], bytes_fetched=fetched["bytes_fetched"],
                             warnings=fetched["warnings"])
    if pack is not None:
        if not pack.state.is_completed():
            outcome.status, outcome.error = "failed", error_text(pack.state)
        elif (archive := pack.state.result()) is None:
            outcome.status = "empty"
        else:
            outcome.archive, outcome.archive_bytes = Path(archive["path"]).name, archive["size"]
    return outcome


def _resolve_packages(params: PullParameters, names: list[str]) -> list[PrefectFuture[Any]]:
    return [resolve_package_task.submit(params, name) for name in names]


def _pull_packages(params: PullParameters, names: list[str], refresh: bool = False,
                   on_fetching: Callable[[], None] | None = None) -> list[PackageOutcome]:
    """Resolve, fetch and pack every package: at most ``concurrency`` fetches at once, and
    each package is packed as soon as its fetch ends (while other packages still download),
    so the task runner needs room for both (:func:`task_runner`). ``on_fetching`` runs once
    the first fetches are queued (work started there queues behind them)."""
    plans = _resolve_packages(params, names)
    fetch = fetch_package_task.with_options(refresh_cache=True) if refresh else fetch_package_task
    fetches: list[PrefectFuture[Any] | None] = [None] * len(names)
    packs: list[PrefectFuture[Any] | None] = [None] * len(names)
    waiting: list[int] = list(range(len(names)))
    running: dict[PrefectFuture[Any], int] = {}
    while waiting or running:
        while waiting and len(running) < params.concurrency:
            i = waiting.pop(0)
            # A future as the argument: Prefect resolves it and records the dependency.
            future = fetch.submit(params, plans[i])  # type: ignore[call-overload]
            fetches[i], running[future] = future, i
        if on_fetching is not None:
            on_fetching()
            on_fetching = None
        done = next(as_completed(list(running)))
        i = running.pop(done)
        if not params.dry_run:
            packs[i] = pack_package_task.submit(params, done)  # type: ignore[call-overload]
    wait([f for f in [*fetches, *packs] if f is not None])
    if params.dry_run:
        _print_plans(names, fetches)
    return [_outcome(name, plans[i], fetches[i], packs[i], params.dry_run)  # type: ignore[arg-type]
            for i, name in enumerate(names)]


def _print_plans(names: list[str], fetches: list[PrefectFuture[Any] | None]) -> None:
    """Dry-run: each planned package's images, in package order (§6.7)."""
    logger = get_run_logger()
    for name, fetch in zip(names, fetches, strict=True):
        if fetch is not None and fetch.state.is_completed():
            planned = fetch.state.result()
            logger.info("%s", render_dry_run_plan(name, planned["planned"], planned["versions"]))


def _start_package_versions(params: PullParameters) -> tuple[dict[str, Any],
                                                              list[PrefectFuture[Any]]]:
    """Discover (leniently) and start the release-image pulls of ``package-versions.tar``;
    they run beside the packages' fetches."""
    found = discover_packages_task(params, lenient=True)
    if params.dry_run:
        return found, []
    return found, [pull_release_images_task.submit(params, n) for n in found["names"]]


def _finish_package_versions(params: PullParameters, report: PullReport, found: dict[str, Any],
                             futures: list[PrefectFuture[Any]]) -> None:
    logger = get_run_logger()
    report.warnings += [w for w in found["warnings"] if w not in report.warnings]
    if params.dry_run:
        logger.info("[dry-run] package-versions archive would contain release images for: %s",
                    ", ".join(found["names"]))
        return
    wait(futures)
    if stop_requested():  # as d8: a cancelled run packs its finished packages, not this one
        logger.info("Pull cancelled: package-versions archive not packed")
        return
    pulled = []
    for name, future in zip(found["names"], futures, strict=True):
        if future.state.is_completed():
            pulled.append(future.state.result())
            report.warnings += [w for w in pulled[-1].get("warnings", [])
                                if w not in report.warnings]
        else:
            report.warnings.append(f"Failed to pull release images for package {name}: "
                                   f"{error_text(future.state)}")
    if not any(p["images"] for p in pulled):
        logger.info("No package release images found, skipping package-versions archive")
        return
    pack_versions_task(params, pulled)


class PackageVersions:
    """``package-versions.tar``: started beside the packages' fetches, finished after them."""

    def __init__(self, params: PullParameters) -> None:
        self.params = params
        self.started: tuple[dict[str, Any], list[PrefectFuture[Any]]] | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = _start_package_versions(self.params)

    def finish(self, report: PullReport) -> None:
        self.start()
        assert self.started is not None
        _finish_package_versions(self.params, report, *self.started)


def _package_versions(params: PullParameters, report: PullReport) -> None:
    PackageVersions(params).finish(report)


def prepare(params: PullParameters) -> None:
    """Validate, register the source endpoint (credentials stay in this process), mkdir."""
    options = params.options()
    validate_proxy_mode(options)
    runtime.register_endpoint(options.source.registry, tls=params.tls(),
                       credentials=source_credentials(options.source.registry,
                                                      params.credentials_block))
    Path(params.bundle_dir).mkdir(parents=True, exist_ok=True)


def emit_bundle_completed(params: PullParameters, report: PullReport) -> None:
    """``d8mirror.bundle.completed``: the bundle is whole; payload says where and what."""
    bundle = str(Path(params.bundle_dir).resolve())
    emit_event(event=COMPLETED_EVENT,
               resource={"prefect.resource.id": f"d8mirror.bundle.{bundle}",
                         "prefect.resource.name": bundle},
               payload={"bundle_dir": bundle, "source": params.source,
                        "packages": [p.name for p in report.packages if p.status == "pulled"],
                        "archives": [a.name for a in report.archives],
                        "bytes": sum(a.size for a in report.archives)})


def finish(params: PullParameters, report: PullReport, started: float) -> dict[str, Any]:
    """Archives, report, artifacts, event; raises PullFailed naming the failed packages."""
    report.cancelled = stop_requested()
    report.archives = [] if params.dry_run else [
        ArchiveStat(s.name, s.size, s.chunks) for s in bundle_stats(Path(params.bundle_dir))]
    if params.gost_digest and not params.dry_run and not report.cancelled and report.ok:
        gost_sidecars(params, report)
    report.elapsed_seconds = time.monotonic() - started
    _publish(params, report)
    if not report.ok and not report.cancelled:
        raise PullFailed("; ".join([f"failed packages: {', '.join(report.failed)}"]
                                   if report.failed else report.errors))
    if not params.dry_run and not report.cancelled:
        emit_bundle_completed(params, report)
    return report.to_json()


def gost_sidecars(params: PullParameters, report: PullReport) -> None:
    """As d8, once the pull fully succeeded: a ``.gostsum`` for every ``.tar``/``.chunk`` of
    the bundle dir; a failure fails the run (spec §7.6)."""
    logger = get_run_logger()
    logger.info("Compute GOST digests for bundle")
    try:
        files = write_gost_sidecars(Path(params.bundle_dir))
    except (MirrorError, OSError) as exc:
        report.errors.append(f"GOST digests not written: {type(exc).__name__}: {exc}")
        return
    logger.info("GOST digests written for %d file(s)", len(files))


def _publish(params: PullParameters, report: PullReport) -> None:
    get_run_logger().info("\n%s", render_summary(report, verbose=params.verbose_summary))
    summary = render_summary(report)  # the artifact always lists every package
    create_markdown_artifact(key="mirror-pull-summary", markdown=f"```\n{summary}\n```",
                             description="d8mirror pull summary")
    create_table_artifact(key="mirror-pull-packages", table=report.table_rows(),
                          description="Packages of this pull")
    if params.dry_run:
        return
    try:
        report.write(Path(params.bundle_dir))
    except OSError as exc:
        if not report.failed:
            raise
        # The packages' own failures (often the same full disk) are what the run must report.
        get_run_logger().error("pull report not written: %s", exc)


def task_runner(concurrency: int) -> Any:
    """Threads for ``concurrency`` fetches plus as many packs (and release-image pulls)."""
    return ThreadPoolTaskRunner(max_workers=2 * concurrency)


@flow(name="mirror-pull", task_runner=task_runner(4),
      log_prints=True)
def mirror_pull(params: PullParameters) -> dict[str, Any]:
    """Pull Deckhouse packages into ``params.bundle_dir`` (see the module docstring)."""
    started = time.monotonic()
    work_existed = params.work_root().exists()
    prepare(params)
    options = params.options()
    report = PullReport(source=params.source, dry_run=params.dry_run,
                        packages_skipped=not options.per_package_phase,
                        edition=edition_of(params.source),
                        only_extra_images=params.only_extra_images)
    if params.skip_vex_images:
        get_run_logger().warning(SKIP_VEX_WARNING)
    versions = PackageVersions(params)
    if options.per_package_phase:
        found = discover_packages_task(params)
        report.warnings += found["warnings"]
        report.packages = _pull_packages(params, found["names"], on_fetching=versions.start)
    versions.finish(report)
    result = finish(params, report, started)
    if params.upload is not None and not params.dry_run and not report.cancelled:
        result["upload"] = upload_bundle(UploadParameters(
            bundle_dir=params.bundle_dir, **params.upload.model_dump()))
    if not report.cancelled:    # a failed run raised above: both keep the cache for a retry
        remove_default_work_dir(params, existed=work_existed)
    return result


@flow(name="mirror-package", task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
      log_prints=True)
def mirror_package(params: MirrorPackageParameters) -> dict[str, Any]:
    """(Re-)fetch one package into an existing bundle directory: package-<name>.tar only."""
    pull = params.pull_parameters()
    prepare(pull)
    name = params.package_name
    marker = outcome_file(pull, name)
    marker.unlink(missing_ok=True)
    [outcome] = _pull_packages(pull, [name], refresh=params.force_refetch)
    if pull.gost_digest and outcome.archive and not stop_requested():
        write_gost_sidecars(Path(pull.bundle_dir), outcome.archive)  # this archive's only
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(asdict(outcome), sort_keys=True))
    report = PullReport(source=pull.source, dry_run=pull.dry_run, packages=[outcome])
    create_table_artifact(key="mirror-package", table=report.table_rows(),
                          description=f"d8mirror: package {name} into {pull.bundle_dir}")
    if outcome.status == "failed":
        raise PullFailed(f"failed packages: {name}")
    return asdict(outcome)


def run_pull(params: PullParameters,
             on_running: list[Any] | None = None) -> dict[str, Any]:
    """Run the flow in this process with the requested package concurrency (``on_running``:
    flow hooks, e.g. the CLI's graceful SIGTERM)."""
    return mirror_pull.with_options(task_runner=task_runner(params.concurrency),
                                    on_running=on_running)(params)
