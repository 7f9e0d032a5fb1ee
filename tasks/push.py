"""Prefect tasks of mirror-push: thin wrappers over :mod:`d8mirror.push`.

Results are small JSON dicts. ``push_layout_task`` is cached by content (the layout's
``index.json`` and provenance sidecar, and the target repository), so a retried flow run
re-pushes only the layouts that failed; its body is idempotent anyway (HEAD before every write).
Credentials never pass through here: tasks get clients by registry host from ``tasks.endpoints``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from d8mirror.bundle import SIDECAR_WORKERS, check_archive_sidecars
from d8mirror.errors import BundleError
from d8mirror.layout import INDEX_FILE, PROVENANCE_FILE
from d8mirror.push.access import check_write_access
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.discovery_tags import DiscoveryTag, plan_discovery_tags, push_discovery_tags
from d8mirror.push.pusher import push_layout
from d8mirror.push.routing import parse_target
from d8mirror.push.service import job_spans, plan_jobs
from d8mirror.push.unified import WorkDir, unpack_all
from d8mirror.push.validate import refuse_invalid
from d8mirror.push.verify import Expected, verify_pushed
from tasks.endpoints import client_for
from tasks.policy import TRANSIENT_RETRIES, content_key
from tasks.push_models import PushParameters as PushParameters  # re-exported


def blob_locations(registry: str) -> BlobLocations:
    """Blobs known to be in the target in this process (cross-repository mount sources)."""
    return BlobLocations.shared(registry)


@task(name="check-write-access", **TRANSIENT_RETRIES)
def check_write_access_task(registry: str) -> None:
    """§8.6: push a deterministic tiny image to ``<registry>:d8WriteCheck``."""
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


def _file_sha256(path: Path) -> str:
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def layout_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """content_key(index.json sha256, provenance sha256, target registry + repository)."""
    job = parameters["job"]
    directory = Path(job["directory"])
    return content_key("push-layout", _file_sha256(directory / INDEX_FILE),
                       _file_sha256(directory / PROVENANCE_FILE), parameters["registry"],
                       job["repository"])


@task(name="push-layout", task_run_name="push-{job[layout]}", cache_key_fn=layout_cache_key,
      persist_result=True, result_serializer="json", **TRANSIENT_RETRIES)
def push_layout_task(registry: str, job: dict[str, str], blob_workers: int = 4) -> dict[str, Any]:
    """Push one layout (blobs HEAD-first, mounts, byte-exact manifests); large blobs come
    straight from their archive by the tree's spans file that the job names."""
    logger = get_run_logger()
    logger.info("Pushing %s/%s", registry, job["repository"])
    result = push_layout(client_for(registry), Path(job["directory"]), job["layout"],
                         job["repository"], locations=blob_locations(registry),
                         blob_workers=blob_workers, warn=logger.warning,
                         spans=job_spans(job.get("spans", "")))
    return result.to_json()


@task(name="push-discovery-tags", **TRANSIENT_RETRIES)
def push_discovery_tags_task(params: PushParameters, unified: str) -> list[dict[str, Any]]:
    """§8.5: ``<registry>/<packages path>:<name>`` (and modules, plugins) for the tree."""
    target = params.target()
    tags = plan_discovery_tags(Path(unified), target, params.router())
    push_discovery_tags(client_for(target.registry), tags)
    return [t.to_json() for t in tags]


@task(name="verify-push", **TRANSIENT_RETRIES)
def verify_push_task(registry: str, expected: list[list[str]]) -> list[dict[str, Any]]:
    """Every pushed (repository, tag) must resolve to the bundle's digest; mismatches named."""
    items = [Expected(repo, tag, digest) for repo, tag, digest in expected]
    return [m.to_json() for m in verify_pushed(client_for(registry), items)]


def discovery_from_json(items: list[dict[str, Any]]) -> list[DiscoveryTag]:
    return [DiscoveryTag(i["kind"], i["repository"], i["tag"], i["digest"]) for i in items]
