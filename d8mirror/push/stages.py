"""The stages of a push, in the order mirror-push runs them; ``flows/push.py`` maps each one to
one task, and the CLI's warm-up (:mod:`d8mirror.push.warmup`) calls the first ones itself:

    check_bundle ─▶ (a delta bundle: check_delta_base) ─▶ prepare_push_tree
    ─▶ push_layout (per LayoutJob) ─▶ finish_push ─▶ push_result

:func:`check_bundle` reads every archive to its end and checks every layout before anything is
written; for a delta bundle, :func:`~d8mirror.push.delta_base.check_delta_base` then checks
that the target holds every blob the bundle omits (HEADs only). :func:`prepare_push_tree`
hashes the archives against their checksum sidecars while it unpacks them (sorted, index files
merged, provenance recorded) into one tree, and plans one :class:`LayoutJob` per non-empty
layout; a layout that cannot be read is skipped with a warning
carried in the result. :func:`push_layout` pushes one job. :func:`finish_push` verifies every
pushed tag, pushes the discovery tags of the items whose layouts all landed and verifies those.
:func:`push_result` puts the outcomes together. Inputs and results are pydantic models, so the
Prefect layer passes them between tasks as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.bundle import SIDECAR_WORKERS, BlobSpans, CheckedFiles, check_archive_sidecars
from d8mirror.delta import Delta
from d8mirror.errors import BundleError, LayoutError
from d8mirror.layout import Layout
from d8mirror.progress import ItemProgress
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient

from .blobs import BlobLocations
from .blobsource import LayoutBlobs
from .delta_base import DeltaNeeds
from .discovery_tags import DiscoveryTag, plan_discovery_tags, push_discovery_tags, split_landed
from .pusher import LayoutPlan, LayoutPushResult, expected_sizes, plan_layout, push_layout_blobs
from .pusher import push_layout as push_layout_dir
from .routing import Router, find_layouts
from .summary import LayoutFailure, PushResult
from .unified import UnpackResult, WorkDir, load_spans, read_spans_file, spans_path, unpack_all
from .validate import refuse_invalid
from .verify import Expected, Mismatch, verify_pushed

log = logging.getLogger("d8mirror.push")

Warn = Callable[[str], None]

_REFUSED = "refusing to push a corrupt bundle: "


class LayoutJob(BaseModel):
    """One layout to push: where it is and where it goes."""

    model_config = ConfigDict(frozen=True)

    layout: str = Field(description="Path relative to the unified tree ('' = its root).")
    directory: str = Field(description="Absolute path of the layout.")
    repository: str = Field(description="Target repository path.")
    spans: str = Field(
        "", description="The tree's blob spans file (blobs left in their archive); '' = none."
    )
    weight: int = Field(
        0, description="Bytes of the layout's blobs (in the tree or left in an archive)."
    )


class PreparedTree(BaseModel):
    """The unpacked tree, its layout jobs, and the working dir to remove after the push."""

    unpack: UnpackResult
    jobs: list[LayoutJob]
    warnings: list[str] = Field(
        default_factory=list, description="Job planning: layouts skipped, and why."
    )
    tmp: Path = Field(description="The push's working dir (holds push/unified).")
    created: list[Path] = Field(
        default_factory=list, description="Directories the push created there."
    )

    @property
    def unified(self) -> Path:
        return self.unpack.root

    def workdir(self) -> WorkDir:
        return WorkDir(self.tmp, list(self.created))


class PushedLayouts(BaseModel):
    """What became of every layout job."""

    done: list[LayoutPushResult] = Field(default_factory=list)
    failed: list[LayoutFailure] = Field(default_factory=list)
    cancelled: list[str] = Field(
        default_factory=list, description="Layouts a stop request left unpushed."
    )

    def record(
        self,
        job: LayoutJob,
        outcome: LayoutPushResult | BaseException | str | None,
    ) -> None:
        """A job's outcome: its result, None (a stop left it unpushed) or its error."""
        if isinstance(outcome, LayoutPushResult):
            self.done.append(outcome)
        elif outcome is None:
            self.cancelled.append(job.layout)
        else:
            self.failed.append(
                LayoutFailure(layout=job.layout, repository=job.repository, error=str(outcome))
            )


class FinishResult(BaseModel):
    """Discovery tags pushed and withheld, and every tag that did not verify."""

    discovery: list[DiscoveryTag] = Field(default_factory=list)
    withheld: list[DiscoveryTag] = Field(default_factory=list)
    mismatches: list[Mismatch] = Field(default_factory=list)


# -- check and prepare ---------------------------------------------------------------------------
def check_bundle(
    archives: Sequence[Path], target: Repository, router: Router, *, delta: Delta | None = None
) -> DeltaNeeds | None:
    """Read every archive to its end and check every layout (:mod:`d8mirror.push.validate`);
    BundleError naming the archives, before anything is written. For a delta bundle
    (``delta``), blobs the archives lack are accepted when the delta omits them: the omitted
    blobs and the layouts that need them are returned, for :func:`check_delta_base`."""
    omitted = None if delta is None else {blob.digest: blob.size for blob in delta.omitted}
    check = refuse_invalid(
        archives, repository_of=lambda rel: router.repository(target, rel), omitted=omitted
    )
    return None if delta is None else DeltaNeeds.of(delta, check.omitted_needed)


def prepare_push_tree(
    archives: Sequence[Path],
    workdir: WorkDir,
    target: Repository,
    router: Router,
    *,
    checked: CheckedFiles | None = None,
    warn: Warn | None = None,
) -> PreparedTree:
    """Unpack ``archives`` (sorted) into ``workdir``'s unified tree and plan one job per
    layout, while the archives are hashed against their sidecars on other threads (``checked``:
    files already found to match); BundleError for a corrupt bundle, and then the working dir
    is removed again. Nothing is pushed here."""
    say = warn or log.warning
    with ThreadPoolExecutor(max_workers=SIDECAR_WORKERS, thread_name_prefix="sidecars") as pool:
        checks = [pool.submit(check_archive_sidecars, archive, checked) for archive in archives]
        try:
            unified = workdir.prepare()
            unpacked = unpack_all(archives, unified, warn=say)
            jobs, warnings = plan_jobs(unified, target, router)
            _refuse_corrupt(checks)
        except BaseException as exc:
            for check in checks:
                check.cancel()
            workdir.cleanup()
            corrupt = [] if isinstance(exc, BundleError) else _problems_found(checks)
            if corrupt:  # a corrupt archive explains a failed unpack best
                raise BundleError(_REFUSED + "; ".join(corrupt)) from exc
            raise
    for message in warnings:
        say(message)
    return PreparedTree(
        unpack=unpacked,
        jobs=jobs,
        warnings=warnings,
        tmp=workdir.tmp,
        created=list(workdir.created),
    )


def _refuse_corrupt(checks: list[Future[list[str]]]) -> None:
    corrupt = [problem for check in checks for problem in check.result()]
    if corrupt:
        raise BundleError(_REFUSED + "; ".join(corrupt))


def _problems_found(checks: list[Future[list[str]]]) -> list[str]:
    """Problems of the checks that ran to an answer (cancelled or failed ones are skipped)."""
    return [
        problem
        for check in checks
        if not check.cancelled() and check.exception() is None
        for problem in check.result()
    ]


def plan_jobs(
    unified: Path,
    target: Repository,
    router: Router,
) -> tuple[list[LayoutJob], list[str]]:
    """Every non-empty layout of the tree, sorted by path (R-8.3), and a warning for each
    unreadable one (skipped)."""
    jobs: list[LayoutJob] = []
    warnings: list[str] = []
    weights = _layout_weights(unified)
    for rel in find_layouts(unified):
        directory = unified / rel if rel else unified
        try:
            empty = not Layout(directory).has_images()
        except LayoutError as exc:
            warnings.append(f"Skipping layout {rel or '/'}: {exc}")
            continue
        if not empty:
            jobs.append(
                LayoutJob(
                    layout=rel,
                    directory=str(directory),
                    repository=router.repository(target, rel).path,
                    spans=str(spans_path(unified)),
                    weight=weights.get(rel, 0),
                )
            )
    return jobs, warnings


def _layout_weights(unified: Path) -> dict[str, int]:
    """Bytes under each layout's ``blobs/sha256`` (tree path → bytes), spans included."""
    weights: dict[str, int] = {}
    sizes = [
        (blob.parent.parent.parent.relative_to(unified).as_posix(), blob.lstat().st_size)
        for blob in unified.glob("**/blobs/sha256/*")
    ]
    sizes += [
        (PurePosixPath(path).parent.parent.parent.as_posix(), span.size)
        for path, span in load_spans(unified).items()
    ]
    for rel, size in sizes:
        key = "" if rel == "." else rel
        weights[key] = weights.get(key, 0) + size
    return weights


def heaviest_first(jobs: Iterable[LayoutJob]) -> list[LayoutJob]:
    """The order to start jobs in: most bytes first, so that no big layout is left to run
    alone at the end (ties keep their order)."""
    return sorted(jobs, key=lambda job: job.weight, reverse=True)


def job_spans(job: LayoutJob) -> BlobSpans | None:
    """The blob spans a job names (None when it names none)."""
    return read_spans_file(Path(job.spans)) if job.spans else None


# -- push ----------------------------------------------------------------------------------------
def push_layout(
    client: RegistryClient,
    job: LayoutJob,
    *,
    locations: BlobLocations,
    blob_workers: int = 4,
    warn: Warn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: ItemProgress | None = None,
    planned: LayoutPlan | None = None,
) -> LayoutPushResult:
    """Push one layout job (:func:`d8mirror.push.pusher.push_layout`; ``planned``: its
    :func:`plan_job`, when already made); raises the registry's typed errors, or
    :class:`~d8mirror.push.pusher.LayoutPushCancelled` once ``should_stop()``."""
    return push_layout_dir(
        client,
        Path(job.directory),
        job.layout,
        job.repository,
        locations=locations,
        blob_workers=blob_workers,
        warn=warn,
        spans=job_spans(job),
        should_stop=should_stop,
        progress=progress,
        planned=planned,
    )


def plan_job(job: LayoutJob) -> LayoutPlan:
    """The job's tags and manifest trees, read from the unpacked tree only (no request):
    what :func:`push_layout` pushes (hand it over as ``planned``) and, with
    :func:`layout_sizes`, the exact totals of a push's progress before any layout starts."""
    spans = job_spans(job)
    source = LayoutBlobs(
        Layout(Path(job.directory)), job.layout, spans if spans is not None else BlobSpans()
    )
    return plan_layout(source)


def layout_sizes(planned: LayoutPlan) -> dict[str, int]:
    """Every blob and manifest the planned tags need, digest → size."""
    return expected_sizes(planned[0])


def push_blobs_ahead(
    client: RegistryClient,
    job: LayoutJob,
    *,
    locations: BlobLocations,
    blob_workers: int = 4,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Only the blobs of one layout job, no manifest and no retry (the CLI's warm-up); the
    blobs put."""
    return push_layout_blobs(
        client,
        Path(job.directory),
        job.layout,
        job.repository,
        locations=locations,
        blob_workers=blob_workers,
        spans=job_spans(job),
        should_stop=should_stop,
    )


# -- finish --------------------------------------------------------------------------------------
def finish_push(
    client: RegistryClient,
    unified: Path,
    target: Repository,
    router: Router,
    layouts: PushedLayouts,
    *,
    stopped: bool = False,
    warn: Warn | None = None,
) -> FinishResult:
    """Verify every pushed tag; push the discovery tags (R-8.5) of the items all of whose
    layouts landed and verified (none at all once ``stopped``), withholding the others; verify
    those too."""
    say = warn or log.warning
    mismatches = verify_pushed(
        client,
        [Expected(r.repository, tag, digest) for r in layouts.done for tag, digest in r.tags],
    )
    unverified = {m.repository for m in mismatches}
    not_landed = [f.layout for f in layouts.failed] + layouts.cancelled
    not_landed += [r.layout for r in layouts.done if r.repository in unverified]
    planned = plan_discovery_tags(unified, target, router)
    tags, withheld = ([], planned) if stopped else split_landed(planned, not_landed)
    for tag in withheld:
        say(
            f"Not tagging {target.registry}/{tag.repository}:{tag.tag}: the "
            f"{tag.kind.rstrip('s')} did not land completely (rerun the push)"
        )
    push_discovery_tags(client, tags)
    mismatches += verify_pushed(client, [Expected(d.repository, d.tag, d.digest) for d in tags])
    return FinishResult(discovery=tags, withheld=withheld, mismatches=mismatches)


def push_result(
    target: Repository,
    tree: PreparedTree,
    layouts: PushedLayouts,
    finish: FinishResult,
    *,
    cancelled: bool = False,
    elapsed_seconds: float = 0.0,
) -> PushResult:
    """The outcome of the push: warnings of the job planning first, then the layouts'."""
    return PushResult(
        target=str(target),
        unpack=tree.unpack,
        layouts=tuple(layouts.done),
        failures=tuple(layouts.failed),
        discovery=tuple(finish.discovery),
        mismatches=tuple(finish.mismatches),
        cancelled=cancelled,
        elapsed_seconds=elapsed_seconds,
        warnings=(*tree.warnings, *(w for r in layouts.done for w in r.warnings)),
        withheld=tuple(finish.withheld),
        not_started=tuple(layouts.cancelled),
    )
