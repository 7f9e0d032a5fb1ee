"""Composition of a pull's sizing (:mod:`d8mirror.pull.sizing`, :mod:`tasks.sizing`).

    per package: resolve-package ─▶ size-package    ┐ at most ``concurrency`` in flight
    per catalog package: size-release-catalog       ┘
    ─▶ PullSizing + free space ─▶ dry-run: size lines
                               └▶ pull: space check (a lower bound, before any layer)
                                  ─▶ size-package again with the main images fetched, for
                                     packages whose main images name more (size_exactly)
                                  ─▶ space check (exact) ─▶ fetches

Sizing reads manifests (cached in the blob store for the fetches that follow); a pull fetches
the main images early only where they name internal and extra images, so it knows every blob,
its archives' exact sizes and whether they fit before it fetches the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from d8mirror.pull.plan import PackagePlan
from d8mirror.pull.sizing import PackageSize, PullSizing, check_space, measure_space
from flows.bounded import submit_bounded
from tasks.models import PullParameters
from tasks.pull import resolve_package_task
from tasks.sizing import size_package_task, size_release_catalog_task


def plan_and_size(
    params: PullParameters, names: list[str], catalog: list[str]
) -> tuple[list[PrefectFuture[PackagePlan]], PullSizing]:
    """Every package planned and sized, and every catalog package's release images sized,
    at most ``concurrency`` at once. Returns the plans (futures, all finished) in package
    order and the sizing (with free space); a package whose plan or sizing failed is left
    out of the sizing (its fetch meets the error again and reports it)."""
    plans: list[PrefectFuture[PackagePlan]] = []

    def submit(item: tuple[bool, str]) -> PrefectFuture[Any]:
        is_package, name = item
        if not is_package:
            return size_release_catalog_task.submit(params, name)
        plan = resolve_package_task.submit(params, name)
        plans.append(plan)
        return size_package_task.submit(params, plan)  # type: ignore[call-overload,no-any-return]

    items = [(True, n) for n in names] + [(False, n) for n in catalog]
    sized = submit_bounded(submit, items, params.concurrency)
    finished = [
        (is_package, f.result())
        for f, (is_package, _) in zip(sized, items, strict=True)
        if f.state.is_completed()
    ]
    sizing = PullSizing(
        packages=[s for is_package, s in finished if is_package],
        catalog=[s for is_package, s in finished if not is_package],
    )
    sizing = measure_space(sizing, Path(params.bundle_dir), params.work_root())
    return plans, sizing


def size_exactly(
    params: PullParameters, plans: list[PrefectFuture[PackagePlan]], sizing: PullSizing
) -> PullSizing:
    """A real pull's sizing made exact: the packages whose internal and extra images are
    named inside main images not in the store yet are sized again with those main images
    fetched first (the pull fetches them anyway), at most ``concurrency`` at once."""
    by_name = {s.name: s for s in sizing.packages}
    redo = [
        plan
        for plan in plans
        if plan.state.is_completed() and by_name.get(plan.result().name, _NONE).needs_layers
    ]
    if not redo:
        return sizing
    futures = submit_bounded(
        lambda plan: size_package_task.submit(params, plan, True),  # type: ignore[call-overload]
        redo,
        params.concurrency,
    )
    for future in futures:
        if future.state.is_completed():
            size = future.result()
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
