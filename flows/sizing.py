"""Composition of a pull's sizing (:mod:`d8mirror.pull.sizing`, :mod:`tasks.sizing`).

    per package: resolve-package (at most ``concurrency`` in flight)
    ─▶ size-pull: every planned package and catalog package, ``concurrency`` at once
    ─▶ PullSizing + free space ─▶ dry-run: size lines
                               └▶ pull: space check (a lower bound, before any layer)
                                  ─▶ size-pull again with the main images fetched, for the
                                     packages whose main images name more (size_exactly)
                                  ─▶ space check (exact) ─▶ fetches

Sizing reads manifests (cached in the blob store for the fetches that follow); a pull fetches
the main images early only where they name internal and extra images, so it knows every blob,
its archives' exact sizes and whether they fit before it fetches the rest.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from d8mirror.pull.plan import PackagePlan
from d8mirror.pull.sizing import PackageSize, PullSizing, check_space, measure_space
from flows.bounded import submit_bounded
from tasks.models import PullParameters
from tasks.pull import resolve_package_task
from tasks.sizing import size_pull_task


def plan_and_size(
    params: PullParameters, names: list[str], catalog: list[str]
) -> tuple[list[PrefectFuture[PackagePlan]], PullSizing]:
    """Every package planned (``concurrency`` at once), then every planned package and every
    catalog package's release images sized in one task. Returns the plans (futures, all
    finished) in package order and the sizing (with free space); a package whose plan or
    sizing failed is left out of the sizing (its fetch meets the error again and reports
    it)."""
    plans = submit_bounded(
        lambda name: resolve_package_task.submit(params, name), names, params.concurrency
    )
    sized = size_pull_task(params, _planned(plans), catalog)
    sizing = PullSizing(packages=sized.packages, catalog=sized.catalog)
    return plans, measure_space(sizing, Path(params.bundle_dir), params.work_root())


def _planned(plans: list[PrefectFuture[PackagePlan]]) -> list[PackagePlan]:
    return [plan.result() for plan in plans if plan.state.is_completed()]


def size_exactly(
    params: PullParameters, plans: list[PrefectFuture[PackagePlan]], sizing: PullSizing
) -> PullSizing:
    """A real pull's sizing made exact: the packages whose internal and extra images are
    named inside main images not in the store yet are sized again with those main images
    fetched first (the pull fetches them anyway), in one task."""
    by_name = {s.name: s for s in sizing.packages}
    redo = [plan for plan in _planned(plans) if by_name.get(plan.name, _NONE).needs_layers]
    if not redo:
        return sizing
    for size in size_pull_task(params, redo, [], fetch_main=True).packages:
        by_name[size.name] = size
    exact = sizing.model_copy(update={"packages": [by_name[s.name] for s in sizing.packages]})
    return measure_space(exact, Path(params.bundle_dir), params.work_root())


_NONE = PackageSize(name="")


def enforce_space(params: PullParameters, sizing: PullSizing, *, final: bool = True) -> None:
    """A real pull's space check (unless ``skip_space_check``); the final one logs the
    sized totals."""
    logger = get_run_logger()
    if final:
        logger.info(
            "Pull size: %d images, %d unique blobs, %d bytes to download, %d bytes of archives",
            sizing.images,
            len(sizing.blobs),
            sum(sizing.to_download.values()),
            sizing.bundle_bytes,
        )
        for note in sizing.unsized:
            logger.info("Not sized before fetching: %s", note)
    if params.skip_space_check:
        if final:
            logger.warning("Disk space check skipped (--skip-space-check)")
        return
    check_space(sizing)
