"""The pull's kept cache: its shared lock for a run and its gc after a successful run, thin
wrappers over :mod:`d8mirror.cache_gc` (the record, the lock and the rules live there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from d8mirror.cache_gc import CacheLock, collect_garbage, run_references, write_run_record
from d8mirror.errors import CacheBusyError, MirrorError

from .models import PullParameters
from .runtime import close_used_blobs, open_used_blobs, used_blobs


def keeps_cache(params: PullParameters) -> bool:
    """Whether the run's working dir is a kept cache (``tmp_dir``): only then is there
    anything to record and collect (the default ``<bundle>/.tmp`` goes after success)."""
    return bool(params.tmp_dir) and not params.dry_run


@contextmanager
def cache_in_use(params: PullParameters, run: str | None) -> Iterator[CacheLock]:
    """For the block: a kept cache's lock held shared (a gc waits for the run, the run waits
    for a running gc; the default ``<bundle>/.tmp`` is no cache and is not locked), and the
    run's record of used blobs opened. The caller may release the lock early (to collect);
    it is released at the end anyway."""
    lock = CacheLock(params.work_root())
    if run is not None:
        open_used_blobs(run)
    try:
        if not params.tmp_dir:  # the default <bundle>/.tmp is no cache: nothing to lock, and
            yield lock  # nothing is created before the run's first checks (a bad receipt)
            return
        with lock:
            yield lock
    finally:
        if run is not None:
            close_used_blobs(run)


@task(name="collect-cache", cache_policy=NO_CACHE)
def collect_cache_task(
    params: PullParameters, run: str, packages: list[str], catalog: list[str]
) -> dict[str, object] | None:
    """After a successful pull: write the run's record (its layouts' blobs and every digest
    it read or stored) and collect what the newest ``keep_runs + 1`` records do not
    reference. Never fails the run (the bundle is complete): a cache in use by another pull,
    or an error, is logged and left to the next run or ``d8mirror gc``. The gc report, or
    None when nothing was collected."""
    logger = get_run_logger()
    cache = params.work_root()
    used = used_blobs(run)
    try:
        record = run_references(
            cache, run, packages, catalog, used.digests() if used is not None else ()
        )
        write_run_record(cache, record)
        report = collect_garbage(cache, keep_runs=params.keep_runs)
    except CacheBusyError as exc:
        logger.info("Cache gc skipped: %s", exc)
        return None
    except (MirrorError, OSError) as exc:
        logger.warning("Cache gc not done (the bundle is complete): %s", exc)
        return None
    for line in report.lines():
        logger.info("%s", line)
    return report.to_json()
