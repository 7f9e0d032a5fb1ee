"""The Prefect task that sizes a pull (:mod:`d8mirror.pull.sizing`): manifest requests only
(and, with ``fetch_main``, the main images that name internal and extra images).

    resolve-package (per package) ─▶ size-pull: every planned package and every
                                     package-versions.tar part, ``concurrency`` at once

One task for the whole sizing, not one per package: a Prefect task run costs the client and
the API server tens of milliseconds of CPU, more than sizing a package from cached answers.
A part that cannot be sized is left out (its fetch meets the error again and reports it).
Its results feed the dry-run's size lines, the space check before the first blob fetch and
the exact totals of the run's progress (:func:`tasks.runtime.progress_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from d8mirror.errors import MirrorError
from d8mirror.pull.fetcher import FetchCancelled, ImageFetcher
from d8mirror.pull.plan import PackagePlan
from d8mirror.pull.sizing import PackageSize, size_package, size_release_catalog

from .models import PullParameters
from .pull import VERSIONS_ITEM, fetcher_for, source_slots
from .runtime import progress_for

log = logging.getLogger("d8mirror.sizing")


class SizedParts(BaseModel):
    """The packages and the package-versions parts sized (those that could be)."""

    packages: list[PackageSize] = []
    catalog: list[PackageSize] = []


@task(name="size-pull", cache_policy=NO_CACHE)  # side effects: store, progress totals
def size_pull_task(
    params: PullParameters,
    plans: list[PackagePlan],
    catalog: list[str],
    fetch_main: bool = False,
) -> SizedParts:
    """Every planned package's images, blobs and archive size (``fetch_main``: its main
    images fetched first, to size what they name) and every ``catalog`` package's release
    images; their blobs become the progress totals (not on a dry-run: nothing moves)."""
    options = params.options()
    # Fetchers are made here, in the task's thread: they share the run's source answers.
    jobs = [(plan, fetcher_for(params)) for plan in plans]
    parts = [(name, fetcher_for(params)) for name in catalog]

    progress = None if params.dry_run else progress_for("pull")  # a dry-run moves nothing

    def package(plan: PackagePlan, fetcher: ImageFetcher) -> PackageSize | None:
        size = _tolerant(
            plan.name, lambda: size_package(fetcher, options, plan, fetch_main=fetch_main)
        )
        if size is not None and progress is not None:  # totals grow as each part is sized
            progress.expect(size.blobs, item=size.name)
        return size

    def part(name: str, fetcher: ImageFetcher) -> PackageSize | None:
        size = _tolerant(name, lambda: size_release_catalog(fetcher, options, name))
        if size is not None and progress is not None:
            progress.expect(size.blobs, item=VERSIONS_ITEM)
        return size

    with (
        source_slots(params, params.blob_workers),
        ThreadPoolExecutor(max(1, params.concurrency), thread_name_prefix="d8mirror-size") as pool,
    ):
        sized = [pool.submit(package, plan, fetcher) for plan, fetcher in jobs]
        sized_parts = [pool.submit(part, name, fetcher) for name, fetcher in parts]
        result = SizedParts(
            packages=[s for f in sized if (s := f.result()) is not None],
            catalog=[s for f in sized_parts if (s := f.result()) is not None],
        )
    return result


def _tolerant(name: str, size: Callable[[], PackageSize]) -> PackageSize | None:
    try:
        return size()
    except FetchCancelled:
        raise
    except (MirrorError, OSError) as exc:  # e.g. a full disk: the fetch reports it as its own
        log.info("not sized before fetching: %s: %s", name, exc)
        return None
