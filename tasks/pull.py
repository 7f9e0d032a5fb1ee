"""Prefect tasks of the pull: thin wrappers over the stages of ``d8mirror.pull``.

    discover-packages ─▶ resolve-package (plan_package) ─▶ fetch-package (fetch_package)
    ─▶ pack-package;  dry-run: resolve-package ─▶ list-planned-images (planned_images)
    pull-release-images (pull_release_catalog) ─▶ pack-package-versions

Parameters and results are pydantic models (``PullParameters``, ``PackagePlan``,
``FetchResult``, ``ArchiveInfo``, ``ReleaseCatalog``…), stored by Prefect as JSON. Expensive
tasks are cached by content: the package's resolved manifest digests, its working dir and a
cache version (never the task source), so a retried flow run (the UI's Retry) skips packages
that already succeeded, and blobs are never fetched twice thanks to the run's one blob store.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, cast

from prefect import task
from prefect.context import TaskRunContext

from d8mirror import cache_gc
from d8mirror.errors import ChildRunFailed
from d8mirror.files import write_atomic
from d8mirror.names import sha256_sidecar
from d8mirror.progress import ItemProgress
from d8mirror.pull.archive_cache import ArchiveCache
from d8mirror.pull.delta import BaseBlobs
from d8mirror.pull.discovery import Discovery, discover_packages
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.package import FetchResult, PackageLayouts, fetch_package
from d8mirror.pull.packing import ArchiveInfo, pack_package, pack_versions
from d8mirror.pull.plan import PackagePlan, plan_package, planned_images
from d8mirror.pull.release_catalog import ReleaseCatalog, pull_release_catalog
from d8mirror.pull.report import PackageOutcome
from d8mirror.pull.tag_digests import (
    TagDigests,
    current_digests,
    read_record,
    tag_digests,
    write_record,
)

from .concurrency import registry_slots
from .models import MirrorPackageParameters, PullParameters
from .policy import TRANSIENT_RETRIES, content_key
from .runtime import (
    base_blobs,
    blob_store,
    client_for,
    progress_for,
    source_answers,
    stop_requested,
    used_blobs,
)

#: The progress item of ``package-versions.tar`` (release images of every catalog package).
VERSIONS_ITEM = "package-versions"


def fetcher_for(params: PullParameters, progress: ItemProgress | None = None) -> ImageFetcher:
    """A fetcher for one task: the source's shared client, the run's one blob store, the
    run's answers from the source (a tag asked once per run); what it moves is reported to
    ``progress`` (one package's item of the run's progress); every digest it reads or stores
    joins the run's used blobs (what the cache gc keeps)."""
    run = _flow_run_id()
    return ImageFetcher(
        client_for(params.repository().registry),
        blob_store(params.store_root()),
        blob_workers=params.blob_workers,
        should_stop=stop_requested,
        progress=progress,
        answers=source_answers(run),
        used=used_blobs(run),
        base=delta_base_blobs(params),
    )


def delta_base_blobs(params: PullParameters) -> BaseBlobs | None:
    """A delta pull's base receipt blobs (shared by the run's fetchers), None for a full pull."""
    base = params.delta_base
    if base is None:
        return None
    return base_blobs(_flow_run_id(), base.path, base.sha256)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run = flow_run.get_id()
    return None if run is None else str(run)


def progress_item(name: str, phase: str) -> ItemProgress:
    """The pull's progress item of package ``name`` (or :data:`VERSIONS_ITEM`), now in
    ``phase`` (resolve, fetch, pack)."""
    item = progress_for("pull").item(name)
    item.phase(phase)
    return item


def source_slots(params: PullParameters, occupy: int = 1) -> Any:
    """Slots of the source registry's global concurrency limit (when the run asks for them)."""
    return registry_slots(params.repository().registry, occupy, enabled=params.concurrency_limits)


#: Per-package state files under ``<work>/state/`` (outside the packed working dirs); their
#: names are :mod:`d8mirror.cache_gc`'s, which removes those of packages no longer pulled.
STATE_DIR = cache_gc.STATE_DIR
FETCH_KEY_SUFFIX = cache_gc.FETCH_KEY_SUFFIX
FETCH_TAGS_SUFFIX = cache_gc.FETCH_TAGS_SUFFIX
PACK_RECORD_SUFFIX = cache_gc.PACK_RECORD_SUFFIX
OUTCOME_SUFFIX = cache_gc.OUTCOME_SUFFIX


def state_file(params: PullParameters, name: str, suffix: str) -> Path:
    """``<work>/state/<name><suffix>``."""
    return params.work_root() / STATE_DIR / f"{name}{suffix}"


def fetch_marker(params: PullParameters, name: str) -> Path:
    """Where a package fetch records its content key, outside the packed working dir."""
    return state_file(params, name, FETCH_KEY_SUFFIX)


def fetch_tags_record(params: PullParameters, name: str) -> Path:
    """Where a package fetch records every tag it resolved (:mod:`d8mirror.pull.tag_digests`)."""
    return state_file(params, name, FETCH_TAGS_SUFFIX)


def remove_default_work_dir(params: PullParameters, *, existed: bool) -> bool:
    """Q9, after a successful pull: the bundle dir holds the bundle. Without ``tmp_dir``
    the working dir ``<bundle>/.tmp`` (blob store, layouts, archive links, state) goes; with
    ``tmp_dir`` it is the cache the user asked for and stays. A dry-run removes it only when
    it made it (``existed``: it was there when the run started). True when removed."""
    if params.tmp_dir or (params.dry_run and existed):
        return False
    work = params.work_root()
    if not work.exists():
        return False
    try:
        shutil.rmtree(work)
    except OSError as exc:  # the bundle is complete: a leftover is no reason to fail it
        logging.getLogger("d8mirror.pull").warning("working dir %s not removed: %s", work, exc)
        return False
    return True


# -- discovery and planning ---------------------------------------------------------------------
@task(name="discover-packages", **TRANSIENT_RETRIES)
def discover_packages_task(params: PullParameters, lenient: bool = False) -> Discovery:
    """Package names to mirror (catalog tags, filtered), with warnings."""
    options = params.options()
    with source_slots(params):
        return discover_packages(client_for(options.source.registry), options, lenient=lenient)


@task(name="resolve-package", task_run_name="resolve-{name}", **TRANSIENT_RETRIES)
def resolve_package_task(params: PullParameters, name: str) -> PackagePlan:
    """The package's plan: versions and the digests they resolve to now (its content
    identity), with the digests now of the tags its last fetch resolved."""
    fetcher = fetcher_for(params, progress_item(name, "resolve"))
    with source_slots(params):
        plan = plan_package(fetcher, params.options(), name)
    with source_slots(params, params.blob_workers):
        return plan.model_copy(update={"tags": planned_tag_digests(params, fetcher, plan)})


@task(name="list-planned-images", task_run_name="plan-images-{plan.name}", **TRANSIENT_RETRIES)
def list_planned_images_task(params: PullParameters, plan: PackagePlan) -> list[str]:
    """Dry-run: the images a pull of ``plan`` would record (manifest HEADs only)."""
    item = progress_item(plan.name, "resolve")
    fetcher = fetcher_for(params, item)
    with source_slots(params, params.blob_workers):
        images = planned_images(fetcher, params.options(), plan)
    item.done()
    return images


#: The shape of a cached fetch result: ``FetchResult`` (records of the earlier ``dict``
#: results must not be reused; bump when the result's meaning changes).
FETCH_RESULT = "fetch-result-v2"


def _identity_key(params: PullParameters, name: str, identity: dict[str, object]) -> str:
    """A delta pull's keys name its base receipt's SHA-256 (a full pull's stay as they were):
    its fetches and archives are never a full pull's, nor another base's."""
    delta = () if params.delta_base is None else (f"delta-base:{params.delta_base.sha256}",)
    return content_key(
        "fetch",
        FETCH_RESULT,
        *delta,
        params.source,
        params.model_dump(
            include={
                "include_packages",
                "exclude_packages",
                "only_extra_images",
                "skip_vex_images",
                "packages_path_suffix",
                "proxy_registry",
                "dry_run",
            }
        ),
        identity,
        str(params.package_work_dir(name).resolve()),
    )


def fetch_content_key(params: PullParameters, plan: PackagePlan) -> str:
    """Identity of a package fetch: source, selection flags, the plan's digests, working dir."""
    return _identity_key(params, plan.name, plan.identity())


def _plan_key(params: PullParameters, plan: PackagePlan) -> str:
    """Identity of a plan without its tag digests: what a fetch's tag record belongs to."""
    identity = {k: v for k, v in plan.identity().items() if k != "tags"}
    return _identity_key(params, plan.name, identity)


def planned_tag_digests(
    params: PullParameters, fetcher: ImageFetcher, plan: PackagePlan
) -> TagDigests | None:
    """The digests, now, of every tag the last fetch of this same plan resolved (release
    images, extra images' tags, VEX ``.att`` tags, absent ones as absent), so the fetch's key
    covers them; manifest HEADs, several at once, none for tags the plan resolved already.
    None without such a fetch (the first one, versions or digests moved, a dry-run): no
    cached fetch can match then."""
    if params.dry_run:
        return None
    refs = read_record(fetch_tags_record(params, plan.name), _plan_key(params, plan))
    return None if refs is None else current_digests(fetcher, refs)


def _fetch_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The content key, unless a cache record for it exists while the working dir does not
    hold that content (it was removed): then a fresh key, so no record stands in for files
    that are not there."""
    params: PullParameters = parameters["params"]
    plan: PackagePlan = parameters["plan"]
    key = fetch_content_key(params, plan)
    marker = fetch_marker(params, plan.name)
    if marker.is_file() and marker.read_text() == key:
        return key
    store = getattr(context, "result_store", None)
    if store is not None and store.exists(key):
        return f"{key}-stale-{uuid.uuid4().hex}"
    return key


@task(
    name="fetch-package",
    task_run_name="fetch-{plan.name}",
    cache_key_fn=_fetch_key,
    persist_result=True,
    result_serializer="json",
    **TRANSIENT_RETRIES,
)
def fetch_package_task(params: PullParameters, plan: PackagePlan) -> FetchResult:
    """Pull one package's images into its working dir (blobs from the shared store)."""
    name = plan.name
    marker = fetch_marker(params, name)
    marker.unlink(missing_ok=True)
    fetcher = fetcher_for(params, progress_item(name, "fetch"))
    with source_slots(params, params.blob_workers):
        result = fetch_package(
            fetcher, params.options(), plan, PackageLayouts.fresh(params.package_work_dir(name))
        )
    # The content is what this fetch resolved: the plan's tags (when it knew them) and
    # every tag the plan could not name; the next plan asks the source for the same tags.
    tags = tag_digests(fetcher)
    write_record(fetch_tags_record(params, name), _plan_key(params, plan), tags)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, fetch_content_key(params, plan.model_copy(update={"tags": tags})).encode())
    _cache_for_next_plan(params, plan, tags, result)
    return result


def _cache_for_next_plan(
    params: PullParameters, plan: PackagePlan, tags: TagDigests, result: FetchResult
) -> None:
    """A plan that could not name the tags (no earlier fetch of these versions) has its
    result cached under a key without them, while the next plan of the same content names
    them: keep the result under that key too, so the next run is a cache hit, not a second
    fetch."""
    if plan.tags == tags:
        return
    context = TaskRunContext.get()
    store = getattr(context, "result_store", None)
    if store is not None:
        store.write(result, key=fetch_content_key(params, plan.model_copy(update={"tags": tags})))


def _pack_key(params: PullParameters, name: str, *, where: bool = True) -> str | None:
    """Identity of an archive: the package's fetched content and how it is packed (and, with
    ``where``, into which bundle dir)."""
    marker = fetch_marker(params, name)
    if not marker.is_file():
        return None
    bundle = str(Path(params.bundle_dir).resolve()) if where else None
    return content_key("pack", marker.read_text(), bundle, params.chunk_bytes(), params.gost_digest)


def _sidecar_text(path: Path) -> str | None:
    sidecar = sha256_sidecar(path)
    return sidecar.read_text() if sidecar.is_file() else None


def _packed_already(marker: Path, key: str) -> ArchiveInfo | None:
    """The recorded archive when it was packed from this very content and is still on disk
    unchanged (same files, sizes and checksum sidecars): a warm re-pull then writes nothing."""
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    if record.get("key") != key or record.get("archive") is None:
        return None
    for name, (size, sidecar) in record["files"].items():
        path = Path(name)
        if not path.is_file() or path.stat().st_size != size or _sidecar_text(path) != sidecar:
            return None
    return ArchiveInfo.model_validate(record["archive"])


@task(name="pack-package", task_run_name="pack-{fetched.name}", **TRANSIENT_RETRIES)
def pack_package_task(params: PullParameters, fetched: FetchResult) -> ArchiveInfo | None:
    """``package-<name>.tar`` (atomic, optional chunks, sidecars); None for an empty package.
    An archive already packed from the same content into the same place is kept as it is."""
    name = fetched.name
    item = progress_item(name, "pack")
    try:
        return _pack_once(params, fetched)
    finally:
        item.done()


def _pack_once(params: PullParameters, fetched: FetchResult) -> ArchiveInfo | None:
    name = fetched.name
    key = _pack_key(params, name)
    marker = state_file(params, name, PACK_RECORD_SUFFIX)
    if key is not None and (kept := _packed_already(marker, key)) is not None:
        return kept
    marker.unlink(missing_ok=True)
    archive = _pack_or_link(params, fetched)
    if key is not None and archive is not None:
        files = {f: (Path(f).stat().st_size, _sidecar_text(Path(f))) for f in archive.files}
        write_atomic(
            marker,
            json.dumps({"key": key, "archive": archive.model_dump(), "files": files}).encode(),
        )
    return archive


def _pack_or_link(params: PullParameters, fetched: FetchResult) -> ArchiveInfo | None:
    """Link the archive packed earlier from the same content (another bundle dir, same
    working dir), else pack it and keep links to it for the next run."""
    name, bundle = fetched.name, Path(params.bundle_dir)
    cache = ArchiveCache(params.work_root() / "archives")
    content = _pack_key(params, name, where=False)
    if content is not None:
        restored = cache.restore(name, content, bundle, gost=params.gost_digest)
        if restored is not None:
            return restored
    packed = pack_package(
        Path(fetched.work_dir),
        bundle,
        name,
        chunk_size=params.chunk_bytes(),
        gost=params.gost_digest,
    )
    archive = None if packed is None else ArchiveInfo.of(packed)
    if content is not None and archive is not None:
        cache.store(name, content, archive)
    return archive


# -- package-versions.tar ------------------------------------------------------------------------
@task(name="pull-release-images", task_run_name="release-images-{name}", **TRANSIENT_RETRIES)
def pull_release_images_task(params: PullParameters, name: str) -> ReleaseCatalog:
    fetcher = fetcher_for(params, progress_item(VERSIONS_ITEM, "fetch"))
    with source_slots(params, params.blob_workers):
        return pull_release_catalog(fetcher, params.options(), name, params.versions_work_dir(name))


@task(name="pack-package-versions")
def pack_versions_task(params: PullParameters, pulled: list[ReleaseCatalog]) -> ArchiveInfo | None:
    layouts = [(p.name, Path(p.layout)) for p in pulled if p.images]
    item = progress_item(VERSIONS_ITEM, "pack")
    try:
        archive = pack_versions(
            layouts,
            Path(params.bundle_dir),
            chunk_size=params.chunk_bytes(),
            gost=params.gost_digest,
        )
    finally:
        item.done()
    return None if archive is None else ArchiveInfo.of(archive)


def outcome_file(params: PullParameters, name: str) -> Path:
    """Where mirror-package leaves one package's outcome for a scale-out parent."""
    return state_file(params, name, OUTCOME_SUFFIX)


# -- scale-out: one child flow run per package ---------------------------------------------------
@task(name="run-package-flow", task_run_name="package-{name}")
def run_package_flow_task(
    deployment: str, child: MirrorPackageParameters, name: str, timeout_seconds: int
) -> PackageOutcome:
    """Run ``deployment`` (a mirror-package) for one package and wait; the child's outcome
    comes from the shared work dir. Raises when the child did not complete."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    outcome = outcome_file(child.pull_parameters(), name)
    run = cast(
        FlowRun,
        run_deployment(
            name=deployment,
            parameters={"params": child.model_dump(mode="json")},
            timeout=timeout_seconds,
            flow_run_name=f"package-{name}",
        ),
    )
    state = run.state
    if state is None or not state.is_completed():
        reason = (state.message if state is not None else "") or "did not complete"
        raise ChildRunFailed(
            f"flow run {run.name} ({run.id}) for package {name}: "
            f"{state.name if state else 'no state'}: {reason}"
        )
    return PackageOutcome.model_validate_json(outcome.read_text())
