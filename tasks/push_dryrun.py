"""The Prefect task of ``push --dry-run`` (:mod:`d8mirror.push.dryrun`): HEAD requests only."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from d8mirror.push.dryrun import LayoutDryRun, dry_run_layout
from d8mirror.push.stages import LayoutJob

from .policy import TRANSIENT_RETRIES
from .runtime import client_for


@task(
    name="dry-run-layout",
    task_run_name="dry-run-{job.layout}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def dry_run_layout_task(registry: str, job: LayoutJob, blob_workers: int = 4) -> LayoutDryRun:
    """What pushing one layout would upload, and what the target already has."""
    return dry_run_layout(client_for(registry), job, blob_workers=blob_workers)
