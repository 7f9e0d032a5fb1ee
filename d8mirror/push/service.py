"""The whole push without Prefect: unpack → push layouts (bounded, parallel) → discovery tags →
verify → result. ``flows/push.py`` composes the same steps as Prefect tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from d8mirror.bundle import BlobSpans
from d8mirror.errors import LayoutError, MirrorError
from d8mirror.layout import Layout
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.discovery_tags import plan_discovery_tags, push_discovery_tags, split_landed
from d8mirror.push.pusher import LayoutPushResult, push_layout
from d8mirror.push.routing import Router, find_layouts
from d8mirror.push.summary import LayoutFailure, PushResult
from d8mirror.push.unified import (
    UnpackResult,
    WorkDir,
    load_spans,
    read_spans_file,
    spans_path,
    unpack_all,
)
from d8mirror.push.validate import refuse_invalid
from d8mirror.push.verify import Expected, verify_pushed
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient

log = logging.getLogger("d8mirror.push")

T = TypeVar("T")


@dataclass(frozen=True)
class LayoutJob:
    """One layout to push: where it is and where it goes (JSON-able)."""

    layout: str         # path relative to the unified tree ("" = root)
    directory: str      # absolute path of the layout
    repository: str     # target repository path
    spans: str = ""     # the tree's blob spans file (blobs left in their archive); "" = none
    weight: int = 0     # bytes of the layout's blobs (in the tree or left in an archive)

    def to_json(self) -> dict[str, Any]:
        return {"layout": self.layout, "directory": self.directory,
                "repository": self.repository, "spans": self.spans, "weight": self.weight}


def plan_jobs(unified: Path, target: Repository, router: Router, *,
              warn: Callable[[str], None] | None = None) -> list[LayoutJob]:
    """Every non-empty layout of the tree, sorted by path (§8.3); unreadable ones warned."""
    jobs = []
    weights = _layout_weights(unified)
    for rel in find_layouts(unified):
        directory = unified / rel if rel else unified
        try:
            empty = not Layout(directory).has_images()
        except LayoutError as exc:
            (warn or log.warning)(f"Skipping layout {rel or '/'}: {exc}")
            continue
        if not empty:
            jobs.append(LayoutJob(rel, str(directory), router.repository(target, rel).path,
                                  str(spans_path(unified)), weights.get(rel, 0)))
    return jobs


def _layout_weights(unified: Path) -> dict[str, int]:
    """Bytes under each layout's ``blobs/sha256`` (tree path → bytes), spans included."""
    weights: dict[str, int] = {}
    sizes = [(blob.parent.parent.parent.relative_to(unified).as_posix(), blob.lstat().st_size)
             for blob in unified.glob("**/blobs/sha256/*")]
    sizes += [(PurePosixPath(path).parent.parent.parent.as_posix(), span.size)
              for path, span in load_spans(unified).items()]
    for rel, size in sizes:
        key = "" if rel == "." else rel
        weights[key] = weights.get(key, 0) + size
    return weights


def heaviest_first(jobs: Iterable[T], weight: Callable[[T], int]) -> list[T]:
    """The order to start jobs in: most bytes first, so that no big layout is left to run
    alone at the end (ties keep their order)."""
    return sorted(jobs, key=weight, reverse=True)


def job_weight(job: LayoutJob) -> int:
    return job.weight


def job_spans(spans_file: str) -> BlobSpans | None:
    """The blob spans a job names (None when it names none)."""
    return read_spans_file(Path(spans_file)) if spans_file else None


def expected_tags(results: Sequence[LayoutPushResult]) -> list[Expected]:
    return [Expected(r.repository, tag, digest) for r in results for tag, digest in r.tags]


def push_jobs(client: RegistryClient, jobs: Sequence[LayoutJob], *, concurrency: int = 4,
              blob_workers: int = 4, warn: Callable[[str], None] | None = None,
              ) -> tuple[list[LayoutPushResult], list[LayoutFailure]]:
    """Push layouts on a bounded pool; every layout is tried, failures are collected."""
    locations = BlobLocations()
    spans = {name: job_spans(name) for name in sorted({job.spans for job in jobs})}

    def one(job: LayoutJob) -> LayoutPushResult | LayoutFailure:
        log.info("Pushing %s/%s", client.registry, job.repository)
        try:
            return push_layout(client, Path(job.directory), job.layout, job.repository,
                               locations=locations, blob_workers=blob_workers, warn=warn,
                               spans=spans[job.spans])
        except (MirrorError, OSError) as exc:
            return LayoutFailure(job.layout, job.repository, str(exc))

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="push") as pool:
        futures = {job: pool.submit(one, job) for job in heaviest_first(jobs, job_weight)}
        outcomes = [futures[job].result() for job in jobs]
    done = [o for o in outcomes if isinstance(o, LayoutPushResult)]
    failed = [o for o in outcomes if isinstance(o, LayoutFailure)]
    return done, failed


def push_tree(client: RegistryClient, unified: Path, target: Repository, router: Router, *,
              concurrency: int = 4, blob_workers: int = 4,
              unpack: UnpackResult | None = None) -> PushResult:
    """Push every layout of an unpacked tree, then discovery tags, then verify."""
    started = time.monotonic()
    warnings: list[str] = []

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    jobs = plan_jobs(unified, target, router, warn=warn)
    done, failed = push_jobs(client, jobs, concurrency=concurrency, blob_workers=blob_workers,
                             warn=warn)
    discovery, withheld = split_landed(plan_discovery_tags(unified, target, router),
                                       [f.layout for f in failed])
    push_discovery_tags(client, discovery)
    expected = expected_tags(done) + [Expected(d.repository, d.tag, d.digest) for d in discovery]
    mismatches = verify_pushed(client, expected)
    return PushResult(str(target), unpack, tuple(done), tuple(failed), tuple(discovery),
                      tuple(mismatches), elapsed_seconds=time.monotonic() - started,
                      warnings=tuple([*(unpack.warnings if unpack else ()), *warnings]),
                      withheld=tuple(withheld))


def push_bundle(client: RegistryClient, archives: Sequence[Path], tmp_dir: Path,
                target: Repository, router: Router, *, concurrency: int = 4,
                blob_workers: int = 4) -> PushResult:
    """Unpack ``archives`` (already sorted) under ``tmp_dir`` and push them; the unified tree
    (and only what this call created) is removed at the end."""
    refuse_invalid(archives, repository_of=lambda rel: router.repository(target, rel))
    workdir = WorkDir(tmp_dir)
    try:
        unified = workdir.prepare()
        unpack = unpack_all(archives, unified)
        return push_tree(client, unified, target, router, concurrency=concurrency,
                         blob_workers=blob_workers, unpack=unpack)
    finally:
        workdir.cleanup()
