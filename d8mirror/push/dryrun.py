"""``push --dry-run``: what a push would upload and what the target already has (issue 16).

For every layout job of the unpacked tree (:func:`~d8mirror.push.stages.prepare_push_tree`)
it asks the target with HEAD requests only: does each tag point at the layout's manifest, is
each unique blob there. Nothing is written to the target.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from pydantic import BaseModel

from d8mirror.bundle import BlobSpans
from d8mirror.layout import Layout
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy
from d8mirror.units import human_size

from .blobsource import LayoutBlobs
from .pusher import _split_present, _unique_blobs, plan_layout
from .stages import LayoutJob, job_spans


class LayoutDryRun(BaseModel):
    """One layout: tags to push or present, blobs (and bytes) to upload or present."""

    layout: str
    repository: str
    tags_to_push: int = 0
    tags_present: int = 0
    blobs_to_upload: int = 0
    bytes_to_upload: int = 0
    blobs_present: int = 0
    bytes_present: int = 0
    blobs_to_mount: int = 0  # a delta bundle's omitted blobs: mounted within the target
    bytes_to_mount: int = 0


def dry_run_layout(
    client: RegistryClient,
    job: LayoutJob,
    *,
    blob_workers: int = 4,
    retry: RetryPolicy | None = None,
) -> LayoutDryRun:
    """What pushing ``job`` would do, asked with HEAD requests only."""
    retry = retry or default_policy()
    source = LayoutBlobs(Layout(Path(job.directory)), job.layout, job_spans(job) or BlobSpans())
    plans, _ = plan_layout(source)
    todo, already = _split_present(client, job.repository, plans, retry)
    blobs = _unique_blobs(p.node for p in plans)
    exists = partial(_blob_exists, client, job.repository, retry)
    with ThreadPoolExecutor(max(1, blob_workers), thread_name_prefix="d8mirror-dry") as pool:
        present = list(pool.map(exists, [b.digest for b in blobs]))
    result = LayoutDryRun(
        layout=job.layout,
        repository=job.repository,
        tags_to_push=len(todo),
        tags_present=len(already),
    )
    for blob, there in zip(blobs, present, strict=True):
        size = max(0, blob.size)
        if there:
            result.blobs_present += 1
            result.bytes_present += size
        elif not source.holds(blob.digest):  # omitted by a delta bundle (checked before)
            result.blobs_to_mount += 1
            result.bytes_to_mount += size
        else:
            result.blobs_to_upload += 1
            result.bytes_to_upload += size
    return result


def _blob_exists(client: RegistryClient, repository: str, retry: RetryPolicy, digest: str) -> bool:
    return bool(
        retry.call(
            lambda: client.blob_exists(repository, digest), what=f"check {repository}@{digest}"
        )
    )


def render_push_dry_run(layouts: list[LayoutDryRun]) -> list[str]:
    """One line per layout, then the total (blobs shared by layouts count in each)."""
    lines = [_line(f"layout {d.layout or '/'} -> {d.repository}", [d]) for d in layouts]
    lines.append(_line("Total", layouts))
    return lines


def _line(what: str, layouts: list[LayoutDryRun]) -> str:
    up = sum(d.bytes_to_upload for d in layouts)
    there = sum(d.bytes_present for d in layouts)
    return (
        f"[dry-run] {what}: tags {sum(d.tags_to_push for d in layouts)} to push, "
        f"{sum(d.tags_present for d in layouts)} present; blobs "
        f"{sum(d.blobs_to_upload for d in layouts)} to upload ({human_size(up)}, {up} bytes), "
        f"{sum(d.blobs_present for d in layouts)} present ({human_size(there)}, {there} bytes)"
        + _mounts(layouts)
    )


def _mounts(layouts: list[LayoutDryRun]) -> str:
    """A delta bundle's omitted blobs the layouts would mount (nothing said when none)."""
    count = sum(d.blobs_to_mount for d in layouts)
    size = sum(d.bytes_to_mount for d in layouts)
    return f", {count} to mount ({human_size(size)}, {size} bytes)" if count else ""
