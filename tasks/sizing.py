"""Prefect tasks that size a pull (:mod:`d8mirror.pull.sizing`): manifest requests only.

    resolve-package ─▶ size-package (size_package)          per planned package
    size-release-catalog (size_release_catalog)              per package-versions.tar part

Their results feed the dry-run's size lines, the space check before the first blob fetch and
the exact totals of the run's progress (:func:`tasks.runtime.progress_for`).
"""

from __future__ import annotations

from prefect import task

from d8mirror.pull.plan import PackagePlan
from d8mirror.pull.sizing import PackageSize, size_package, size_release_catalog

from .models import PullParameters
from .policy import TRANSIENT_RETRIES
from .pull import fetcher_for, source_slots
from .runtime import progress_for


@task(name="size-package", task_run_name="size-{plan.name}", **TRANSIENT_RETRIES)
def size_package_task(
    params: PullParameters, plan: PackagePlan, fetch_main: bool = False
) -> PackageSize:
    """The package's images, blobs and archive size (``fetch_main``: its main images fetched
    first, to size what they name); its blobs become the progress totals."""
    fetcher = fetcher_for(params)
    with source_slots(params, params.blob_workers):
        size = size_package(fetcher, params.options(), plan, fetch_main=fetch_main)
    if not params.dry_run:  # a dry-run moves nothing: no totals to reach
        progress_for("pull").expect(size.blobs, item=plan.name)
    return size


@task(name="size-release-catalog", task_run_name="size-versions-{name}", **TRANSIENT_RETRIES)
def size_release_catalog_task(params: PullParameters, name: str) -> PackageSize:
    """``name``'s part of ``package-versions.tar`` (release images; manifests only)."""
    fetcher = fetcher_for(params)
    with source_slots(params, params.blob_workers):
        size = size_release_catalog(fetcher, params.options(), name)
    if not params.dry_run:
        progress_for("pull").expect(size.blobs, item="package-versions")
    return size
