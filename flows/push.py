"""mirror-push: bundle archives into the air-gapped registry.

    write check ─▶ unpack (sorted, merged, Q2 provenance) ─▶ per layout (mapped, bounded):
    push ─▶ verify every pushed tag ─▶ discovery tags of the items whose layouts all landed ─▶
    verify them ─▶ summary + table artifacts ─▶ Failed if any layout failed or any tag does
    not resolve to the bundle's digest

A failed layout never stops the others; the run ends Failed, names it, and withholds the
discovery tag of its item (package, module, plugin). Layout pushes are not cached across runs
(the target may have changed): each run re-checks the target with HEADs and writes only what is
missing, so the UI's Retry re-uploads only what failed. A stop request (Ctrl+C or SIGTERM in
the CLI, :mod:`app.signals`) lets in-flight blobs finish, starts nothing new, pushes no
discovery tag, and ends the run Completed with a "Push was cancelled" summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from d8mirror.errors import PushFailed as PushFailed  # re-exported: run_push raises it
from d8mirror.push.access import bypassed
from d8mirror.push.pusher import LayoutPushResult
from d8mirror.push.service import heaviest_first
from d8mirror.push.summary import LayoutFailure, PushResult, render_push_summary
from d8mirror.push.unified import UnpackResult, WorkDir
from d8mirror.push.verify import Mismatch
from d8mirror.registry import Credentials
from flows.states import error_text
from tasks import runtime
from tasks.credentials import target_credentials
from tasks.push import (
    PushParameters,
    check_bundle_task,
    check_write_access_task,
    discovery_from_json,
    push_discovery_tags_task,
    push_layout_task,
    unpack_bundle_task,
    verify_push_task,
)

#: Credentials handed over by ``run_push`` (the CLI), by registry host; never parameters.
_explicit_credentials: dict[str, Credentials] = {}


def _register_target(params: PushParameters) -> str:
    registry = params.target().registry
    credentials = _explicit_credentials.get(registry) or target_credentials(
        registry, params.credentials_block)
    runtime.register_endpoint(registry, credentials=credentials, tls=params.tls())
    return registry



def _push_layouts(params: PushParameters, registry: str, jobs: list[dict[str, Any]],
                  ) -> tuple[list[LayoutPushResult], list[LayoutFailure], list[str]]:
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=params.concurrency)
    with runner:
        started: dict[int, PrefectFuture[Any]] = {
            i: runner.submit(push_layout_task, {"registry": registry, "job": jobs[i],
                                                "blob_workers": params.blob_workers})
            for i in heaviest_first(range(len(jobs)), lambda i: int(jobs[i].get("weight", 0)))}
        futures = [started[i] for i in range(len(jobs))]
        wait(futures)
    done, failed, cancelled = [], [], []
    for job, future in zip(jobs, futures, strict=True):
        if not future.state.is_completed():
            failed.append(LayoutFailure(job["layout"], job["repository"],
                                        error_text(future.state)))
        elif (doc := future.state.result()).get("cancelled"):
            cancelled.append(str(job["layout"]))
        else:
            done.append(LayoutPushResult.from_json(doc))
    return done, failed, cancelled


def _publish(result: PushResult) -> None:
    create_markdown_artifact(f"```\n{render_push_summary(result)}\n```", key="push-summary",
                             description="d8mirror push summary")
    create_table_artifact(result.table_rows(), key="push-layouts",
                          description="Layouts pushed: tags, status, error")


@flow(name="mirror-push", log_prints=True)
def mirror_push(params: PushParameters) -> dict[str, Any]:
    """Push bundle archives into the target registry; see the module docstring."""
    logger = get_run_logger()
    started = time.monotonic()
    registry = _register_target(params)
    check_bundle_task(params)   # before any request that writes: a bad bundle pushes nothing
    if bypassed():
        logger.warning("MIRROR_BYPASS_ACCESS_CHECKS=1: skipping the registry write check")
    else:
        check_write_access_task(params.registry)
    unpacked = unpack_bundle_task(params)
    workdir = WorkDir(tmp=Path(unpacked["tmp"]),
                      created=[Path(p) for p in unpacked["created"]])
    try:
        done, failed, cancelled = _push_layouts(params, registry, unpacked["jobs"])
        expected = [[r.repository, tag, digest] for r in done for tag, digest in r.tags]
        mismatches = [Mismatch(**m) for m in verify_push_task(registry, expected)]
        unverified = {m.repository for m in mismatches}
        not_landed = [f.layout for f in failed] + cancelled
        not_landed += [r.layout for r in done if r.repository in unverified]
        tags = push_discovery_tags_task(params, unpacked["root"], not_landed)
        discovery = discovery_from_json(tags["pushed"])
        withheld = discovery_from_json(tags["withheld"])
        mismatches += [Mismatch(**m) for m in verify_push_task(
            registry, [[d.repository, d.tag, d.digest] for d in discovery])]
    finally:
        workdir.cleanup()
    unpack = UnpackResult(workdir.unified, tuple(unpacked["unpacked"]),
                          tuple((a, e) for a, e in unpacked["failed"]),
                          unpacked["bytes_written"], tuple(unpacked["warnings"]),
                          unpacked["bytes_in_archives"])
    result = PushResult(str(params.target()), unpack, tuple(done), tuple(failed),
                        tuple(discovery), tuple(mismatches),
                        cancelled=runtime.stop_requested(),
                        elapsed_seconds=time.monotonic() - started,
                        warnings=tuple(w for r in done for w in r.warnings),
                        withheld=tuple(withheld), not_started=tuple(cancelled))
    logger.info("%s", render_push_summary(result))
    _publish(result)
    if not result.ok:
        names = ", ".join(result.failed_layouts) or "none"
        held = ", ".join(f"{d.kind}:{d.tag}" for d in result.withheld) or "none"
        raise PushFailed(f"push to {params.registry} failed; failed layouts: {names}; "
                         f"{len(result.mismatches)} tags did not verify; discovery tags "
                         f"withheld: {held} (rerun the push to complete them)")
    return result.to_json()


def run_push(params: PushParameters, credentials: Credentials | None = None, *,
             on_running: list[Any] | None = None) -> dict[str, Any]:
    """What the CLI calls: hand over explicit credentials (by host), then run the flow
    (``on_running``: flow hooks, e.g. the CLI's graceful SIGTERM)."""
    registry = params.target().registry
    if credentials is not None:
        _explicit_credentials[registry] = credentials
    try:
        return mirror_push.with_options(on_running=on_running)(params)
    finally:
        _explicit_credentials.pop(registry, None)
        runtime.close_clients()
