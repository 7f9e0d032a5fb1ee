"""Prefect tasks of mirror-push: thin wrappers over :mod:`d8mirror.push`.

Results are small JSON dicts. ``push_layout_task`` is never cached across runs: a cached
result says nothing about the target now (it may have been reset, its tags or blobs deleted),
so every run checks the target again. That is cheap, because the body writes nothing that is
already there (one HEAD per tag and per blob), so a retried flow run still re-uploads only what
failed or went missing. A stop request (Ctrl+C, SIGTERM: :mod:`app.signals`) makes layouts not
yet started return ``{"cancelled": true}`` and in-flight ones stop before their manifests.
Credentials never pass through here: tasks get clients by registry host from ``tasks.runtime``.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from d8mirror.bundle import SIDECAR_WORKERS, check_archive_sidecars
from d8mirror.errors import BundleError
from d8mirror.push.access import check_write_access
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.discovery_tags import (
    DiscoveryTag,
    plan_discovery_tags,
    push_discovery_tags,
    split_landed,
)
from d8mirror.push.pusher import LayoutPushCancelled, push_layout
from d8mirror.push.routing import parse_target
from d8mirror.push.service import job_spans, plan_jobs
from d8mirror.push.unified import WorkDir, unpack_all
from d8mirror.push.validate import refuse_invalid
from d8mirror.push.verify import Expected, verify_pushed
from tasks.policy import TRANSIENT_RETRIES
from tasks.push_models import PushParameters as PushParameters  # re-exported
from tasks.runtime import client_for, stop_requested


def blob_locations(registry: str) -> BlobLocations:
    """Blobs known to be in the target in this process (cross-repository mount sources)."""
    return BlobLocations.shared(registry)


@task(name="check-write-access", **TRANSIENT_RETRIES)
def check_write_access_task(registry: str) -> None:
    """§8.6: prove push permission on ``<registry>`` (an upload session opened, cancelled)."""
    target = parse_target(registry)
    check_write_access(client_for(target.registry), target)


@task(name="check-bundle")
def check_bundle_task(params: PushParameters) -> None:
    """Read every archive to its end and check every layout before anything is uploaded
    (:mod:`d8mirror.push.validate`); BundleError naming the archives, and nothing is pushed."""
    target, router = params.target(), params.router()
    refuse_invalid(params.archives(), repository_of=lambda rel: router.repository(target, rel))


@task(name="unpack-bundle")
def unpack_bundle_task(params: PushParameters) -> dict[str, Any]:
    """Unpack every archive (sorted) into ``<tmp>/push/unified``; plan one job per layout."""
    logger = get_run_logger()
    archives = params.archives()
    # The archives are hashed against their sidecars on other threads while the tree is
    # unpacked (both only read the bundle); nothing is pushed until every check passed.
    with ThreadPoolExecutor(max_workers=SIDECAR_WORKERS, thread_name_prefix="sidecars") as pool:
        checks = [pool.submit(check_archive_sidecars, archive) for archive in archives]
        workdir = WorkDir(params.tmp_path(archives))
        try:
            unified = workdir.prepare()
            result = unpack_all(archives, unified, warn=logger.warning)
            jobs = plan_jobs(unified, params.target(), params.router(), warn=logger.warning)
            _refuse_corrupt(checks)
        except BaseException as exc:
            for check in checks:
                check.cancel()
            workdir.cleanup()
            corrupt = [] if isinstance(exc, BundleError) else _problems_found(checks)
            if corrupt:     # a corrupt archive explains a failed unpack best
                raise BundleError(_REFUSED + "; ".join(corrupt)) from exc
            raise
    return {**result.to_json(), "archives": [str(a) for a in archives],
            "tmp": str(workdir.tmp), "created": [str(p) for p in workdir.created],
            "jobs": [j.to_json() for j in jobs]}


_REFUSED = "refusing to push a corrupt bundle: "


def _refuse_corrupt(checks: list[Future[list[str]]]) -> None:
    corrupt = [problem for check in checks for problem in check.result()]
    if corrupt:
        raise BundleError(_REFUSED + "; ".join(corrupt))


def _problems_found(checks: list[Future[list[str]]]) -> list[str]:
    """Problems of the checks that ran to an answer (cancelled or failed ones are skipped)."""
    return [problem for check in checks if not check.cancelled() and check.exception() is None
            for problem in check.result()]


CANCELLED = {"cancelled": True}


@task(name="push-layout", task_run_name="push-{job[layout]}", cache_policy=NO_CACHE,
      **TRANSIENT_RETRIES)
def push_layout_task(registry: str, job: dict[str, str], blob_workers: int = 4) -> dict[str, Any]:
    """Push one layout (blobs HEAD-first, mounts, byte-exact manifests); large blobs come
    straight from their archive by the tree's spans file that the job names. ``CANCELLED``
    when a stop was requested before or during it."""
    logger = get_run_logger()
    if stop_requested():
        return dict(CANCELLED)
    logger.info("Pushing %s/%s", registry, job["repository"])
    try:
        result = push_layout(client_for(registry), Path(job["directory"]), job["layout"],
                             job["repository"], locations=blob_locations(registry),
                             blob_workers=blob_workers, warn=logger.warning,
                             spans=job_spans(job.get("spans", "")), should_stop=stop_requested)
    except LayoutPushCancelled as exc:
        logger.warning("%s", exc)
        return dict(CANCELLED)
    return result.to_json()


@task(name="push-discovery-tags", **TRANSIENT_RETRIES)
def push_discovery_tags_task(params: PushParameters, unified: str,
                             not_landed: list[str]) -> dict[str, list[dict[str, Any]]]:
    """§8.5: ``<registry>/<packages path>:<name>`` (and modules, plugins) for every item of
    the tree whose layouts all landed (none of them in ``not_landed``); none at all after a
    stop request. ``{"pushed": [...], "withheld": [...]}``."""
    logger = get_run_logger()
    target = params.target()
    planned = plan_discovery_tags(Path(unified), target, params.router())
    tags, withheld = ([], planned) if stop_requested() else split_landed(planned, not_landed)
    for tag in withheld:
        logger.warning("Not tagging %s/%s:%s: the %s did not land completely (rerun the push)",
                       target.registry, tag.repository, tag.tag, tag.kind.rstrip("s"))
    push_discovery_tags(client_for(target.registry), tags)
    return {"pushed": [t.to_json() for t in tags], "withheld": [t.to_json() for t in withheld]}


@task(name="verify-push", **TRANSIENT_RETRIES)
def verify_push_task(registry: str, expected: list[list[str]]) -> list[dict[str, Any]]:
    """Every pushed (repository, tag) must resolve to the bundle's digest; mismatches named."""
    items = [Expected(repo, tag, digest) for repo, tag, digest in expected]
    return [m.to_json() for m in verify_pushed(client_for(registry), items)]


def discovery_from_json(items: list[dict[str, Any]]) -> list[DiscoveryTag]:
    return [DiscoveryTag(i["kind"], i["repository"], i["tag"], i["digest"]) for i in items]
