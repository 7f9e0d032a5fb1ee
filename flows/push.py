"""mirror-push: bundle archives into the air-gapped registry.

    check bundle ─▶ (a delta bundle: does the target hold every omitted blob? HEADs only)
    ─▶ write check ─▶ unpack (sorted, merged, Q2 provenance; sidecars checked)
    ─▶ per layout (bounded, heaviest first): push ─▶ finish: verify every pushed tag,
    discovery tags of the items whose layouts all landed, verify them ─▶ summary + table
    artifacts ─▶ PushFailed if any layout failed or any tag does not resolve to the bundle's
    digest

With ``receipt_out``, the previous receipt (``receipt_in``) is read and checked before anything
is written; once every tag verified, the receipt is written (:mod:`d8mirror.push.receipts`:
the previous receipt, else a scan of the target, ∪ what the push verified). A failed or
cancelled push writes no receipt and says so.

Each step is one stage of :mod:`d8mirror.push.stages` run as one task of :mod:`tasks.push`;
at most ``concurrency`` layouts are pushed at once (:mod:`flows.bounded`). The flow returns
the typed :class:`~d8mirror.push.summary.PushResult`. Explicit credentials (the CLI's) reach
the target's client through :mod:`tasks.runtime` and win over a ``credentials_block``.

A failed layout never stops the others; the run ends Failed, names it, and withholds the
discovery tag of its item (package, module, plugin). Layout pushes are not cached across runs
(the target may have changed): each run re-checks the target with HEADs and writes only what is
missing, so the UI's Retry re-uploads only what failed. A stop request (Ctrl+C or SIGTERM in
the CLI, :mod:`app.signals`) lets in-flight blobs finish, starts nothing new, pushes no
discovery tag, and ends the run Completed with a "Push was cancelled" summary.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture

from d8mirror.errors import PushFailed
from d8mirror.push.access import bypassed
from d8mirror.push.delta_base import DeltaBase
from d8mirror.push.dryrun import render_push_dry_run
from d8mirror.push.pusher import LayoutPushResult
from d8mirror.push.stages import (
    FinishResult,
    LayoutJob,
    PushedLayouts,
    heaviest_first,
    push_result,
)
from d8mirror.push.summary import PushResult, render_push_summary
from d8mirror.receipt import Receipt
from flows.bounded import submit_bounded, task_runner
from flows.progress import reporting
from flows.states import error_text
from tasks import runtime
from tasks.credentials import target_credentials
from tasks.push import (
    PushParameters,
    check_bundle_task,
    check_delta_base_task,
    check_write_access_task,
    finish_push_task,
    push_layout_task,
    unpack_bundle_task,
)
from tasks.push_dryrun import dry_run_layout_task
from tasks.push_receipt import (
    read_bundle_id,
    read_previous_receipt_task,
    write_push_receipt_task,
)

__all__ = ["PushFailed", "mirror_push", "run_push"]


def _register_target(params: PushParameters) -> str:
    """The target's endpoint: credentials the CLI was given explicitly win over a Secret
    block named in the parameters, then the environment and docker config."""
    registry = params.target().registry
    credentials = runtime.given_credentials(registry) or target_credentials(
        registry, params.credentials_block
    )
    runtime.register_endpoint(registry, credentials=credentials, tls=params.tls())
    return registry


def _push_layouts(
    params: PushParameters,
    registry: str,
    jobs: list[LayoutJob],
) -> PushedLayouts:
    """Every job pushed, heaviest first, at most ``concurrency`` at once; a failed layout
    never stops the others. Outcomes in the jobs' order (by tree path)."""
    order = heaviest_first(jobs)
    started: dict[str, datetime] = {}

    def submit(job: LayoutJob) -> PrefectFuture[LayoutPushResult | None]:
        started[job.layout] = datetime.now(UTC)  # its slot is free: it starts now
        return push_layout_task.submit(registry, job, params.blob_workers)

    futures = submit_bounded(submit, order, params.concurrency)
    by_layout = {job.layout: future for job, future in zip(order, futures, strict=True)}
    layouts = PushedLayouts()
    for job in jobs:
        future = by_layout[job.layout]
        if future.state.is_completed():
            layouts.record(job, _timed(future.result(), started[job.layout], future))
        else:
            layouts.record(job, error_text(future.state))
    return layouts


def _timed(
    pushed: LayoutPushResult | None, start: datetime, future: PrefectFuture[Any]
) -> LayoutPushResult | None:
    """The layout's result with its duration: from its start to its task's final state."""
    ended = future.state.timestamp
    if pushed is None or ended is None:
        return pushed
    return pushed.model_copy(
        update={"seconds": round(max(0.0, (ended - start).total_seconds()), 3)}
    )


def _dry_run(
    params: PushParameters, registry: str, started: float, base: DeltaBase | None
) -> PushResult:
    """``push --dry-run``: every layout asked with HEAD requests (:mod:`d8mirror.push.dryrun`),
    one line each and the total printed, and for a delta bundle how many of its omitted blobs
    the target holds (``base``, its pre-check); the unpacked tree is removed; nothing is
    pushed."""
    tree = unpack_bundle_task(params)
    try:
        futures = submit_bounded(
            lambda job: dry_run_layout_task.submit(registry, job, params.blob_workers),
            tree.jobs,
            params.concurrency,
        )
    finally:
        tree.workdir().cleanup()
    logger = get_run_logger()
    found = [f.result() for f in futures]  # a failed HEAD fails the dry-run: it says why
    for line in render_push_dry_run(found):
        logger.info("%s", line)
    if base is not None:
        logger.info("[dry-run] %s", base.describe())
    return push_result(
        params.target(),
        tree,
        PushedLayouts(),
        FinishResult(),
        cancelled=runtime.stop_requested(),
        elapsed_seconds=time.monotonic() - started,
    )


def _with_receipt(
    params: PushParameters, result: PushResult, previous: Receipt | None
) -> PushResult:
    """The result with the receipt written when one was asked for and the push verified (and
    the bundle's id, when its sidecars tell it without one)."""
    if not params.receipt_out:
        return result.model_copy(update={"bundle_id": read_bundle_id(params)})
    if result.cancelled or not result.ok:
        why = "was cancelled" if result.cancelled else "failed"
        get_run_logger().warning(
            "No receipt written to %s: the push %s; rerun it to write one",
            params.receipt_out,
            why,
        )
        return result
    path, bundle_id = write_push_receipt_task(params, result, previous)
    return result.model_copy(update={"receipt": path, "bundle_id": bundle_id})


def _publish(result: PushResult) -> None:
    create_markdown_artifact(
        f"```\n{render_push_summary(result)}\n```",
        key="push-summary",
        description="d8mirror push summary",
    )
    create_table_artifact(
        result.table_rows(),
        key="push-layouts",
        description="Layouts pushed: status, time, bytes, blobs uploaded / present / mounted",
    )


@flow(name="mirror-push", task_runner=task_runner(), log_prints=True)
def mirror_push(params: PushParameters) -> PushResult:
    """Push bundle archives into the target registry; see the module docstring."""
    with reporting("push") as progress:
        logger = get_run_logger()
        started = time.monotonic()
        params.check_receipt_options()
        registry = _register_target(params)
        # a bad previous receipt stops the push before any write
        previous = read_previous_receipt_task(params) if params.receipt_in else None
        # before any request that writes: a bad bundle pushes nothing, nor does a delta
        # bundle whose base the target lacks
        needs = check_bundle_task(params)
        base = None if needs is None else check_delta_base_task(registry, params, needs)
        if params.dry_run:
            return _dry_run(params, registry, started, base)
        if bypassed():
            logger.warning("MIRROR_BYPASS_ACCESS_CHECKS=1: skipping the registry write check")
        else:
            check_write_access_task(params.registry)
        progress.phase("unpack")
        tree = unpack_bundle_task(params)
        progress.expect_items(len(tree.jobs))
        progress.phase("push")
        try:
            layouts = _push_layouts(params, registry, tree.jobs)
            finish = finish_push_task(params, tree, layouts)
        finally:
            tree.workdir().cleanup()
        result = push_result(
            params.target(),
            tree,
            layouts,
            finish,
            cancelled=runtime.stop_requested(),
            elapsed_seconds=time.monotonic() - started,
        )
        result = _with_receipt(params, result, previous)
        logger.info("%s", render_push_summary(result))
        _publish(result)
        if not result.ok:
            names = ", ".join(result.failed_layouts) or "none"
            held = ", ".join(f"{d.kind}:{d.tag}" for d in result.withheld) or "none"
            raise PushFailed(
                f"push to {params.registry} failed; failed layouts: {names}; "
                f"{len(result.mismatches)} tags did not verify; discovery tags "
                f"withheld: {held} (rerun the push to complete them)",
                items=[(f.layout or "/", f.error) for f in result.failures],
            )
        return result


def run_push(params: PushParameters, *, on_running: list[Any] | None = None) -> PushResult:
    """Run the flow in this process (``on_running``: flow hooks, e.g. the CLI's graceful
    SIGTERM); explicit credentials were given to :mod:`tasks.runtime` beforehand (the CLI's
    session does it)."""
    try:
        return mirror_push.with_options(on_running=on_running)(params)
    finally:
        runtime.close_clients()
