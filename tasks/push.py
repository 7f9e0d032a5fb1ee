"""Prefect tasks of mirror-push: thin wrappers over the stages of :mod:`d8mirror.push.stages`
(one task per stage), adding retries; parameters and results are its pydantic models.

``push_layout_task`` is never cached across runs: a cached result says nothing about the target
now (it may have been reset, its tags or blobs deleted), so every run checks the target again.
That is cheap, because the body writes nothing that is already there (one HEAD per tag and per
blob), so a retried flow run still re-uploads only what failed or went missing. A stop request
(Ctrl+C, SIGTERM: :mod:`app.signals`) makes layouts not yet started return None and in-flight
ones stop before their manifests. Credentials never pass through here: tasks get clients by
registry host from ``tasks.runtime``.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from d8mirror.errors import MirrorError
from d8mirror.push.access import check_write_access
from d8mirror.push.delta_base import (
    DeltaBase,
    DeltaNeeds,
    bundle_delta,
    check_delta_base,
    refuse_missing_base,
)
from d8mirror.push.pusher import LayoutPlan, LayoutPushCancelled, LayoutPushResult
from d8mirror.push.routing import parse_target
from d8mirror.push.stages import (
    FinishResult,
    LayoutJob,
    PreparedTree,
    PushedLayouts,
    check_bundle,
    finish_push,
    layout_sizes,
    plan_job,
    prepare_push_tree,
    push_layout,
)
from d8mirror.push.unified import WorkDir
from tasks.policy import TRANSIENT_RETRIES
from tasks.push_models import PushParameters as PushParameters  # re-exported
from tasks.runtime import (
    blob_locations,
    checked_files,
    client_for,
    keep_layout_plans,
    progress_for,
    stop_requested,
    take_layout_plan,
)


@task(name="check-write-access", **TRANSIENT_RETRIES)
def check_write_access_task(registry: str) -> None:
    """R-8.6: prove push permission on ``<registry>`` (an upload session opened, cancelled)."""
    target = parse_target(registry)
    check_write_access(client_for(target.registry), target)


@task(name="check-bundle")
def check_bundle_task(params: PushParameters) -> DeltaNeeds | None:
    """Read every archive to its end and check every layout before anything is uploaded
    (:mod:`d8mirror.push.validate`); BundleError naming the archives, and nothing is pushed.
    A delta bundle's ``delta.json`` is read first (a tampered one is refused); its omitted
    blobs and the layouts needing them are returned (None: a full bundle)."""
    delta = bundle_delta(params.bundle_dir)
    if delta is not None:
        get_run_logger().info(
            "Delta bundle %s (base receipt sha256:%s): %d blobs omitted",
            delta.id,
            delta.base_receipt_sha256,
            len(delta.omitted),
        )
    return check_bundle(params.archives(), params.target(), params.router(), delta=delta)


@task(name="check-delta-base", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def check_delta_base_task(registry: str, params: PushParameters, needs: DeltaNeeds) -> DeltaBase:
    """Before any write: HEAD every blob the delta bundle omits in the target (bounded,
    retried); DeltaBaseMissingError when any is missing. Where each was found seeds the
    push's mount sources."""
    target = params.target()
    base = check_delta_base(client_for(registry), needs, target, params.router())
    get_run_logger().info("%s", base.describe())
    refuse_missing_base(base, target)
    blob_locations(registry).seed(base.found, (blob.digest for blob in needs.blobs))
    return base


@task(name="unpack-bundle")
def unpack_bundle_task(params: PushParameters) -> PreparedTree:
    """Unpack every archive (sorted) into ``<tmp>/push/unified``, checking them against their
    sidecars meanwhile; plan one job per layout."""
    archives = params.archives()
    tree = prepare_push_tree(
        archives,
        WorkDir(params.tmp_path(archives)),
        params.target(),
        params.router(),
        checked=checked_files(),
        warn=get_run_logger().warning,
    )
    expect_layouts(tree.jobs)
    return tree


def expect_layouts(jobs: list[LayoutJob]) -> None:
    """The push's progress: every layout an item, with the blobs and manifests its tags
    need (local reads), so the bar's total is exact from the start. A layout that cannot be
    read here is left to its push task, which reports why."""
    progress = progress_for("push")
    progress.expect_items(len(jobs))
    plans: dict[tuple[str, str], LayoutPlan] = {}
    for job in jobs:
        try:
            plans[_job_key(job)] = planned = plan_job(job)
        except MirrorError:
            continue
        progress.item(layout_item(job)).expect(layout_sizes(planned))
    keep_layout_plans(plans)  # each push task takes its own: a layout is planned once


def _job_key(job: LayoutJob) -> tuple[str, str]:
    return (job.directory, job.layout)


@task(
    name="push-layout",
    task_run_name="push-{job.layout}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def push_layout_task(
    registry: str, job: LayoutJob, blob_workers: int = 4
) -> LayoutPushResult | None:
    """Push one layout (blobs HEAD-first, mounts, byte-exact manifests); large blobs come
    straight from their archive by the tree's spans file that the job names. None when a stop
    was requested before or during it."""
    logger = get_run_logger()
    if stop_requested():
        return None
    logger.info("Pushing %s/%s", registry, job.repository)
    item = progress_for("push").item(layout_item(job))
    item.phase("push")
    try:
        result = push_layout(
            client_for(registry),
            job,
            locations=blob_locations(registry),
            blob_workers=blob_workers,
            warn=logger.warning,
            should_stop=stop_requested,
            progress=item,
            planned=take_layout_plan(_job_key(job)),
        )
    except LayoutPushCancelled as exc:
        logger.warning("%s", exc)
        return None
    item.phase("verify")
    return result


def layout_item(job: LayoutJob) -> str:
    """The progress item of a layout job: its path in the tree (the repository for the
    tree's root)."""
    return job.layout or job.repository


@task(name="finish-push", **TRANSIENT_RETRIES)
def finish_push_task(
    params: PushParameters, tree: PreparedTree, layouts: PushedLayouts
) -> FinishResult:
    """R-8.5: verify every pushed tag; discovery tags ``<registry>/<packages path>:<name>`` (and
    modules, plugins) for every item whose layouts all landed, none after a stop request;
    verify them."""
    progress = progress_for("push")
    progress.phase("verify")
    try:
        return _finish(params, tree, layouts)
    finally:
        for job in tree.jobs:
            progress.item(layout_item(job)).done()


def _finish(params: PushParameters, tree: PreparedTree, layouts: PushedLayouts) -> FinishResult:
    target = params.target()
    return finish_push(
        client_for(target.registry),
        tree.unified,
        target,
        params.router(),
        layouts,
        stopped=stop_requested(),
        warn=get_run_logger().warning,
    )
