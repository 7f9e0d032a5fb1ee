"""mirror-pull: Deckhouse packages from a source registry into a bundle directory.

    discover packages ─▶ per package (bounded): resolve (plan) ─▶ size (manifests)
    ─▶ space check ─▶ per package (bounded): fetch ─▶ pack
                      └▶ per package: release images ─▶ pack package-versions.tar
    ─▶ report.json + summary and table artifacts ─▶ Failed if any package failed

Sizing and the space check: :mod:`flows.sizing` (a pull that does not fit stops before its
first layer fetch, unless ``skip_space_check``). A dry-run stops at the plans: per package
resolve ─▶ size ─▶ list planned images, printed with the sizes; no layer is fetched.
Every fan-out holds at most ``concurrency`` tasks in flight (:mod:`flows.bounded`).
Tasks pass pydantic models (``PackagePlan``, ``FetchResult``, ``ArchiveInfo``…); the flow
returns the :class:`~d8mirror.pull.report.PullReport` it also writes as ``report.json``.

A failed package never stops the others; the run ends Failed and names it, and the UI's Retry
re-runs only what failed (fetches are cached by content, blobs come from the shared store).
A complete bundle emits the event ``d8mirror.bundle.completed`` (automations chain push/upload).

A kept cache (``tmp_dir``) is held shared for the run; after a successful run the run's
record is written and the cache collected down to what the newest ``keep_runs + 1`` runs
referenced (:mod:`d8mirror.cache_gc`, :func:`tasks.cache.collect_cache_task`); a failed or
cancelled run removes nothing.

A delta pull (``delta_from``: a receipt of the target, :mod:`tasks.receipts`) verifies the
receipt before anything else, leaves the blobs it lists out of every fetch, layout, sizing and
archive (:mod:`d8mirror.pull.delta`), writes ``delta.json`` after packing and reports bytes
omitted vs shipped; its caches are keyed by the receipt's SHA-256. A full pull removes a
``delta.json`` an earlier delta pull left in its bundle dir.

mirror-package: one package (re-)fetched and packed into an existing bundle directory; its
outcome is also written to ``<work_root>/state/<name>.outcome.json`` for a scale-out parent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run

from d8mirror.bundle import bundle_stats
from d8mirror.bundle.checksums import write_gost_sidecars
from d8mirror.errors import InsufficientSpaceError, MirrorError, PullFailed, SealedFileError
from d8mirror.files import write_atomic
from d8mirror.pull.delta import (
    catalog_repository,
    package_repositories,
    remove_delta,
    write_bundle_delta,
)
from d8mirror.pull.discovery import Discovery, validate_proxy_mode
from d8mirror.pull.package import FetchResult
from d8mirror.pull.packing import ArchiveInfo
from d8mirror.pull.plan import PackagePlan, render_dry_run_plan
from d8mirror.pull.release_catalog import ReleaseCatalog
from d8mirror.pull.report import (
    ArchiveStat,
    DeltaSummary,
    PackageOutcome,
    PullReport,
    edition_of,
    render_summary,
)
from d8mirror.pull.sizing import PullSizing
from d8mirror.receipt import read_receipt
from d8mirror.units import human_size
from flows.bounded import submit_bounded, task_runner
from flows.progress import reporting
from flows.sizing import enforce_space, plan_and_size, size_exactly
from flows.states import error_text
from flows.transfer import upload_bundle
from tasks import runtime
from tasks.cache import cache_in_use, collect_cache_task, keeps_cache
from tasks.credentials import source_credentials
from tasks.models import DeltaBase, MirrorPackageParameters, PullParameters
from tasks.pull import (
    VERSIONS_ITEM,
    delta_base_blobs,
    discover_packages_task,
    fetch_package_task,
    list_planned_images_task,
    outcome_file,
    pack_package_task,
    pack_versions_task,
    pull_release_images_task,
    remove_default_work_dir,
    resolve_package_task,
)
from tasks.receipts import fetch_receipt
from tasks.runtime import stop_requested
from tasks.transfer_models import UploadParameters

__all__ = ["PullFailed", "mirror_package", "mirror_pull", "run_pull"]

COMPLETED_EVENT = "d8mirror.bundle.completed"
#: d8's warning for --skip-vex-images (internal/mirror/pull.go), word for word.
SKIP_VEX_WARNING = (
    "The skip-vex-images flag was detected: Vulnerability scanning may not work "
    "correctly when this flag is used."
)


class _Plans:
    """The packages' resolve tasks, submitted ahead of their fetches: at most ``ahead``
    packages are planned beyond the one asked for, so plans are ready when a fetch slot
    frees, and no more than that wait."""

    def __init__(
        self,
        params: PullParameters,
        names: list[str],
        ahead: int,
        futures: list[PrefectFuture[PackagePlan]] | None = None,
    ) -> None:
        self.params, self.names, self.ahead = params, names, ahead
        self.futures: list[PrefectFuture[PackagePlan]] = list(futures or [])

    def __getitem__(self, i: int) -> PrefectFuture[PackagePlan]:
        while len(self.futures) < min(len(self.names), i + 1 + self.ahead):
            self.futures.append(
                resolve_package_task.submit(self.params, self.names[len(self.futures)])
            )
        return self.futures[i]


def _failed(name: str, plan: PrefectFuture[PackagePlan], state: Any) -> PackageOutcome:
    """A package whose plan, fetch or listing did not complete: the real error is the
    plan's when the plan failed."""
    cause = plan.state if not plan.state.is_completed() else state
    return PackageOutcome(
        name=name, status="cancelled" if stop_requested() else "failed", error=error_text(cause)
    )


def _outcome(
    name: str,
    plan: PrefectFuture[PackagePlan],
    fetch: PrefectFuture[FetchResult],
    pack: PrefectFuture[ArchiveInfo | None] | None,
) -> PackageOutcome:
    if not fetch.state.is_completed():
        return _failed(name, plan, fetch.state)
    fetched = fetch.result()
    outcome = PackageOutcome(
        name=name,
        status="pulled",
        versions=fetched.versions,
        images=fetched.images,
        vex=fetched.vex,
        bytes_fetched=fetched.bytes_fetched,
        blobs_fetched=fetched.blobs_fetched,
        blobs_reused=fetched.blobs_reused,
        warnings=fetched.warnings,
    )
    if pack is not None:
        if not pack.state.is_completed():
            outcome.status, outcome.error = "failed", error_text(pack.state)
        elif (archive := pack.result()) is None:
            outcome.status = "empty"
        else:
            outcome.archive, outcome.archive_bytes = Path(archive.path).name, archive.size
            outcome.gost_known = archive.gost
    return outcome


def _pull_packages(
    params: PullParameters,
    names: list[str],
    *,
    refresh: bool = False,
    on_fetch: Callable[[], None] | None = None,
    catalog: list[str] | None = None,
    sized: Callable[[PullSizing], None] | None = None,
) -> list[PackageOutcome]:
    """Plan and size every package (and the ``catalog`` packages' release images), check
    the disk space (:mod:`flows.sizing`), then fetch and pack: at most ``concurrency``
    fetches at once, each package packed as soon as its fetch ends, while other packages
    still download. ``on_fetch`` runs as each fetch starts and ends (work beside them);
    ``sized`` gets the sizing. A dry-run lists instead (:func:`_plan_packages`)."""
    planned, sizing = plan_and_size(params, names, catalog or [])
    if not params.dry_run:
        enforce_space(params, sizing, final=False)  # a lower bound: refused before any layer
        sizing = size_exactly(params, planned, sizing)
    if sized is not None:
        sized(sizing)
    if params.dry_run:
        return _plan_packages(params, names, planned)
    enforce_space(params, sizing)
    runtime.progress_for("pull").phase("fetch")
    plans = _Plans(params, names, ahead=params.concurrency, futures=planned)
    fetch = fetch_package_task.with_options(refresh_cache=True) if refresh else fetch_package_task
    packs: dict[int, PrefectFuture[ArchiveInfo | None]] = {}
    started: dict[int, datetime] = {}

    def submit_fetch(i: int) -> PrefectFuture[FetchResult]:
        started[i] = datetime.now(UTC)  # its slot is free: it starts now
        # A future as the argument: Prefect resolves it and records the dependency.
        future = fetch.submit(params, plans[i])  # type: ignore[call-overload]
        if on_fetch is not None:
            on_fetch()
        return future  # type: ignore[no-any-return]

    def pack(i: int, fetched: PrefectFuture[Any]) -> None:
        packs[i] = pack_package_task.submit(params, fetched)  # type: ignore[call-overload]
        if on_fetch is not None:
            on_fetch()

    fetches = submit_bounded(submit_fetch, list(range(len(names))), params.concurrency, then=pack)
    wait(list(packs.values()))
    outcomes = []
    early = {s.name: s.bytes_fetched_early for s in sizing.packages}
    for i, name in enumerate(names):
        outcome = _outcome(name, plans[i], fetches[i], packs.get(i))
        outcome.seconds = _seconds(started[i], packs.get(i) or fetches[i])
        if outcome.status != "failed":  # main images the sizing fetched are the package's bytes
            outcome.bytes_fetched += early.get(name, 0)
        outcomes.append(outcome)
    return outcomes


def _seconds(start: datetime, last: PrefectFuture[Any]) -> float | None:
    """From a package's fetch start to the end of its last task (pack, or the fetch that
    failed): the time of that task's final state."""
    ended = last.state.timestamp
    return None if ended is None else round(max(0.0, (ended - start).total_seconds()), 3)


def _plan_packages(
    params: PullParameters, names: list[str], planned: list[PrefectFuture[PackagePlan]]
) -> list[PackageOutcome]:
    """Dry-run: every package's images listed from its plan, the plans printed in package
    order (R-6.7); nothing is fetched."""
    plans = _Plans(params, names, ahead=params.concurrency, futures=planned)
    listings = submit_bounded(
        lambda i: list_planned_images_task.submit(params, plans[i]),  # type: ignore[call-overload]
        list(range(len(names))),
        params.concurrency,
    )
    logger = get_run_logger()
    outcomes = []
    for i, name in enumerate(names):
        if not listings[i].state.is_completed():
            outcomes.append(_failed(name, plans[i], listings[i].state))
            continue
        plan: PackagePlan = plans[i].result()
        logger.info("%s", render_dry_run_plan(name, listings[i].result(), plan.versions))
        outcomes.append(
            PackageOutcome(
                name=name, status="planned", versions=plan.versions, warnings=plan.warnings
            )
        )
    return outcomes


class PackageVersions:
    """``package-versions.tar``: every catalog package's release images (discovered
    leniently), pulled beside the package fetches, at most ``concurrency`` at once
    (:meth:`keep_pulling`, called as fetches start and end), the rest once the fetches are
    done (:meth:`finish`), then packed."""

    def __init__(self, params: PullParameters) -> None:
        self.params = params
        self.found = Discovery()
        self.pending: list[str] = []
        self.pulls: list[PrefectFuture[ReleaseCatalog]] = []
        self.pulled: list[ReleaseCatalog] = []  # what was packed into package-versions.tar
        self._running = 0
        self._lock = threading.Lock()

    def discover(self) -> None:
        self.found = discover_packages_task(self.params, lenient=True)
        self.pending = [] if self.params.dry_run else list(self.found.names)

    def keep_pulling(self) -> None:
        """Start release-image pulls until ``concurrency`` of them run."""
        while self.pending:
            with self._lock:
                if self._running >= self.params.concurrency:
                    return
                self._running += 1
            future = pull_release_images_task.submit(self.params, self.pending.pop(0))
            future.add_done_callback(self._ended)
            self.pulls.append(future)

    def _ended(self, _future: PrefectFuture[ReleaseCatalog]) -> None:
        with self._lock:
            self._running -= 1

    def finish(self, report: PullReport) -> None:
        logger = get_run_logger()
        report.warnings += [w for w in self.found.warnings if w not in report.warnings]
        if self.params.dry_run:
            logger.info(
                "[dry-run] package-versions archive would contain release images for: %s",
                ", ".join(self.found.names),
            )
            return
        self.pulls += submit_bounded(
            lambda name: pull_release_images_task.submit(self.params, name),
            self.pending,
            self.params.concurrency,
        )
        self.pending = []
        wait(self.pulls)
        if stop_requested():  # as d8: a cancelled run packs its finished packages, not this
            logger.info("Pull cancelled: package-versions archive not packed")
            return
        pulled = self._collect(report)
        if not any(p.images for p in pulled):
            logger.info("No package release images found, skipping package-versions archive")
            runtime.progress_for("pull").item(VERSIONS_ITEM).done()
            return
        archive = pack_versions_task(self.params, pulled)
        if archive is not None:
            report.gost_known = archive.gost
            self.pulled = pulled

    def _collect(self, report: PullReport) -> list[ReleaseCatalog]:
        pulled = []
        for name, future in zip(self.found.names, self.pulls, strict=True):
            if future.state.is_completed():
                pulled.append(future.result())
                report.warnings += [w for w in pulled[-1].warnings if w not in report.warnings]
            else:
                report.warnings.append(
                    f"Failed to pull release images for package {name}: {error_text(future.state)}"
                )
        return pulled


def prepare(params: PullParameters) -> PullParameters:
    """Validate, verify a delta pull's base receipt (before anything is written or fetched),
    register the source endpoint (credentials stay in this process), mkdir. Returns the
    parameters the run goes on with (a delta pull's with its verified base)."""
    options = params.options()
    validate_proxy_mode(options)
    params = with_delta_base(params)
    runtime.register_endpoint(
        options.source.registry,
        tls=params.tls(),
        credentials=source_credentials(options.source.registry, params.credentials_block),
    )
    Path(params.bundle_dir).mkdir(parents=True, exist_ok=True)
    return params


def with_delta_base(params: PullParameters) -> PullParameters:
    """``params`` with the verified local copy of its ``delta_from`` receipt and its SHA-256
    (a remote one is downloaded first); a tampered, truncated or unsealed receipt raises
    here (SealedFileError, ReceiptError), before anything is pulled. Unchanged for a full
    pull."""
    if params.delta_from is None:
        return params
    if params.delta_base is not None:  # a child run: its parent's verified copy
        path = Path(params.delta_base.path)
    else:
        path = fetch_receipt(
            params.delta_from,
            params.receipt_dir(),
            endpoint_url=params.delta_from_endpoint_url,
            insecure=params.delta_from_insecure,
        )
    receipt, sha256 = read_receipt(path)
    if params.delta_base is not None and params.delta_base.sha256 != sha256:
        raise SealedFileError(
            f"receipt {path} (SHA-256 {sha256}) is not the one this run was started from "
            f"({params.delta_base.sha256}); start the pull again"
        )
    get_run_logger().info(
        "Delta pull against receipt %s (sha256:%s): %d images, %d blobs the target holds",
        params.delta_from,
        sha256,
        len(receipt.images),
        len(receipt.blobs),
    )
    return params.model_copy(
        update={"delta_base": DeltaBase(path=str(path.resolve()), sha256=sha256)}
    )


def describe_delta(
    params: PullParameters, report: PullReport, catalogs: list[ReleaseCatalog]
) -> None:
    """A delta pull's ``delta.json``: every blob its archives left out (the packages packed
    now, package-versions.tar's parts), and the report's delta section."""
    if params.delta_base is None or params.dry_run:
        return
    base = delta_base_blobs(params)
    assert base is not None
    layouts = [
        repo
        for p in report.packages
        if p.archive
        for repo in package_repositories(p.name, params.package_work_dir(p.name))
    ]
    layouts += [catalog_repository(c.name, Path(c.layout)) for c in catalogs if c.images]
    delta = write_bundle_delta(Path(params.bundle_dir), base, layouts)
    read = base.read
    report.delta = DeltaSummary(
        delta_id=delta.id,
        base_receipt_sha256=delta.base_receipt_sha256,
        blobs_omitted=len(delta.omitted),
        bytes_omitted=delta.bytes_omitted,
        metadata_blobs_read=len(read),
        metadata_bytes_read=sum(read.values()),
    )
    get_run_logger().info(
        "Delta bundle %s: %d blobs (%d bytes) left out, the target holds them",
        delta.id,
        len(delta.omitted),
        delta.bytes_omitted,
    )


def emit_bundle_completed(params: PullParameters, report: PullReport) -> None:
    """``d8mirror.bundle.completed``: the bundle is whole; payload says where and what."""
    bundle = str(Path(params.bundle_dir).resolve())
    emit_event(
        event=COMPLETED_EVENT,
        resource={
            "prefect.resource.id": f"d8mirror.bundle.{bundle}",
            "prefect.resource.name": bundle,
        },
        payload={
            "bundle_dir": bundle,
            "source": params.source,
            "packages": [p.name for p in report.packages if p.status == "pulled"],
            "archives": [a.name for a in report.archives],
            "bytes": sum(a.size for a in report.archives),
            "delta": None if report.delta is None else report.delta.delta_id,
        },
    )


def finish(params: PullParameters, report: PullReport, started: float) -> PullReport:
    """Archives, report, artifacts, event; raises PullFailed naming the failed packages."""
    report.cancelled = stop_requested()
    report.archives = (
        []
        if params.dry_run
        else [
            ArchiveStat(name=s.name, size=s.size, chunks=s.chunks)
            for s in bundle_stats(Path(params.bundle_dir))
        ]
    )
    if report.delta is not None:
        report.delta.bytes_shipped = sum(a.size for a in report.archives)
    if params.gost_digest and not params.dry_run and not report.cancelled and report.ok:
        gost_sidecars(params, report)
    report.elapsed_seconds = time.monotonic() - started
    _publish(params, report)
    if not report.ok and not report.cancelled:
        raise PullFailed(
            "; ".join(
                [f"failed packages: {', '.join(report.failed)}"] if report.failed else report.errors
            ),
            items=failed_items(report),
        )
    if not params.dry_run and not report.cancelled:
        emit_bundle_completed(params, report)
    return report


def failed_items(report: PullReport) -> list[tuple[str, str]]:
    """(package, error) of each failed package, for the CLI's error block."""
    return [(p.name, p.error or "failed") for p in report.packages if p.status == "failed"]


def gost_sidecars(params: PullParameters, report: PullReport) -> None:
    """As d8, once the pull fully succeeded: a ``.gostsum`` for every ``.tar``/``.chunk`` of
    the bundle dir; a failure fails the run (R-7.6)."""
    logger = get_run_logger()
    logger.info("Compute GOST digests for bundle")
    try:
        files = write_gost_sidecars(Path(params.bundle_dir), known=report.gost_digests())
    except (MirrorError, OSError) as exc:
        report.errors.append(f"GOST digests not written: {type(exc).__name__}: {exc}")
        return
    logger.info("GOST digests written for %d file(s)", len(files))


def _publish(params: PullParameters, report: PullReport) -> None:
    get_run_logger().info("\n%s", render_summary(report, verbose=params.verbose_summary))
    summary = render_summary(report)  # the artifact always lists every package
    create_markdown_artifact(
        key="mirror-pull-summary",
        markdown=f"```\n{summary}\n```",
        description="d8mirror pull summary",
    )
    create_table_artifact(
        key="mirror-pull-packages",
        table=report.table_rows(),
        description="Packages of this pull" + _delta_note(report),
    )
    if report.delta is not None:
        create_table_artifact(
            key="mirror-pull-delta",
            table=[report.delta.model_dump()],
            description=f"Delta bundle {report.delta.delta_id}: bytes omitted vs shipped",
        )
    if params.dry_run:
        return
    try:
        report.write(Path(params.bundle_dir))
    except OSError as exc:
        if not report.failed:
            raise
        # The packages' own failures (often the same full disk) are what the run must report.
        get_run_logger().error("pull report not written: %s", exc)


def _delta_note(report: PullReport) -> str:
    delta = report.delta
    if delta is None:
        return ""
    return (
        f" (delta bundle {delta.delta_id}: {human_size(delta.bytes_omitted)} omitted, "
        f"{human_size(delta.bytes_shipped)} shipped)"
    )


@contextmanager
def asking_source_once() -> Iterator[None]:
    """While the block runs, this flow run's fetchers share what the source answered (a tag
    asked once per run: planning, sizing and fetching do not ask again); a retried run
    starts afresh."""
    run = flow_run.get_id()
    if run is None:
        yield
        return
    runtime.open_source_answers(str(run))
    try:
        yield
    finally:
        runtime.close_source_answers(str(run))
        runtime.forget_base_blobs(str(run))  # a delta pull's base receipt, read once per run


@flow(name="mirror-pull", task_runner=task_runner(), log_prints=True)
def mirror_pull(params: PullParameters) -> PullReport:
    """Pull Deckhouse packages into ``params.bundle_dir`` (see the module docstring)."""
    run = flow_run.get_id()
    work_existed = params.work_root().exists()
    with (
        reporting("pull") as progress,
        asking_source_once(),
        cache_in_use(params, None if run is None else str(run)) as cache_lock,
    ):
        started = time.monotonic()
        params = prepare(params)
        if not params.dry_run:  # a full pull into a delta's dir must not look like one
            remove_delta(Path(params.bundle_dir))
        options = params.options()
        report = PullReport(
            source=params.source,
            dry_run=params.dry_run,
            packages_skipped=not options.per_package_phase,
            edition=edition_of(params.source),
            only_extra_images=params.only_extra_images,
        )
        if params.skip_vex_images:
            get_run_logger().warning(SKIP_VEX_WARNING)
        versions = PackageVersions(params)
        progress.phase("discover")
        sizings: list[PullSizing] = []
        if options.per_package_phase:
            found = discover_packages_task(params)
            report.warnings += found.warnings
            versions.discover()
            progress.expect_items(len(found.names) + (1 if versions.pending else 0))
            progress.phase("resolve")  # plan and size every package; then fetch
            try:
                report.packages = _pull_packages(
                    params,
                    found.names,
                    on_fetch=versions.keep_pulling,
                    catalog=versions.found.names,
                    sized=sizings.append,
                )
            except InsufficientSpaceError:
                if not work_existed:  # only manifests and channel images: nothing to keep
                    remove_default_work_dir(params, existed=False)
                raise
        else:
            versions.discover()
            progress.expect_items(1 if versions.pending else 0)
            progress.phase("fetch")
        versions.finish(report)
        describe_delta(params, report, versions.pulled)
        progress.phase("finish")
        if sizings:
            report.sizing = sizings[0].summary()
        if params.dry_run:
            for line in sizings[0].render() if sizings else []:
                get_run_logger().info("%s", line)
        finish(params, report, started)
        if params.upload is not None and not params.dry_run and not report.cancelled:
            upload_bundle(
                UploadParameters(bundle_dir=params.bundle_dir, **params.upload.model_dump())
            )
        if not report.cancelled:  # a failed run raised above: both keep the cache for a retry
            if keeps_cache(params) and run is not None:
                cache_lock.release()  # the gc takes it exclusive
                collect_cache_task(params, str(run), *pulled_names(report, versions))
            remove_default_work_dir(params, existed=work_existed)
        return report


def pulled_names(report: PullReport, versions: PackageVersions) -> tuple[list[str], list[str]]:
    """The packages this run pulled (their layouts are its plan's) and the catalog packages
    whose release images it pulled: what its cache record names."""
    packages = [p.name for p in report.packages if p.status in ("pulled", "empty")]
    return packages, list(versions.found.names)


@flow(name="mirror-package", task_runner=task_runner(), log_prints=True)
def mirror_package(params: MirrorPackageParameters) -> PackageOutcome:
    """(Re-)fetch one package into an existing bundle directory: package-<name>.tar only."""
    pull = params.pull_parameters()
    with reporting("pull") as progress, asking_source_once(), cache_in_use(pull, None):
        progress.expect_items(1)
        pull = prepare(pull)
        name = params.package_name
        marker = outcome_file(pull, name)
        marker.unlink(missing_ok=True)
        [outcome] = _pull_packages(pull, [name], refresh=params.force_refetch)
        if pull.gost_digest and outcome.archive and not stop_requested():
            write_gost_sidecars(
                Path(pull.bundle_dir),
                outcome.archive,  # this archive's only
                known=outcome.gost_known,
            )
        if pull.delta_base is not None and outcome.archive and params.describe_delta:
            base = delta_base_blobs(pull)
            assert base is not None
            repos = package_repositories(name, pull.package_work_dir(name))
            write_bundle_delta(Path(pull.bundle_dir), base, repos, merge=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(marker, outcome.model_dump_json().encode())
        report = PullReport(source=pull.source, dry_run=pull.dry_run, packages=[outcome])
        create_table_artifact(
            key="mirror-package",
            table=report.table_rows(),
            description=f"d8mirror: package {name} into {pull.bundle_dir}",
        )
        if outcome.status == "failed":
            raise PullFailed(f"failed packages: {name}", items=failed_items(report))
        return outcome


def run_pull(params: PullParameters, on_running: list[Any] | None = None) -> PullReport:
    """Run the flow in this process (``on_running``: flow hooks, e.g. the CLI's graceful
    SIGTERM); its fan-outs are bounded by ``params.concurrency`` (:mod:`flows.bounded`)."""
    return mirror_pull.with_options(on_running=on_running)(params)
