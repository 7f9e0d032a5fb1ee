"""Prefect tasks of the pull: thin wrappers over ``d8mirror.pull``.

Results are small JSON records. Expensive tasks are cached by content: the package's resolved
manifest digests, its working dir and a cache version (never the task source), so a retried
flow run (the UI's Retry) skips packages that already succeeded, and blobs are never fetched
twice thanks to the shared blob store.
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

from d8mirror.blobstore import BlobStore
from d8mirror.bundle import ArchiveResult
from d8mirror.pull.archive_cache import ArchiveCache
from d8mirror.pull.discovery import discover_packages
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.package import PackagePuller, PackageResult, pull_release_catalog
from d8mirror.pull.packing import pack_package, pack_versions
from d8mirror.pull.tag_digests import (
    TagDigests,
    current_digests,
    read_record,
    tag_digests,
    write_record,
)
from d8mirror.versions.channels import DEFAULT_CHANNELS, LTS_CHANNEL

from .concurrency import registry_slots
from .models import PullParameters
from .policy import TRANSIENT_RETRIES, content_key
from .runtime import client_for, stop_requested


def blob_store(params: PullParameters) -> BlobStore:
    """One store object per root in this process, so re-verification happens once."""
    return BlobStore.shared(params.store_root())


def puller(params: PullParameters, plan: dict[str, Any] | None = None) -> PackagePuller:
    """A puller for one task; seeded with the planning step's answers when ``plan`` is given,
    so the fetch records exactly the digests its cache key was built from."""
    options = params.options()
    fetcher = ImageFetcher(client_for(options.source.registry), blob_store(params),
                           blob_workers=params.blob_workers, should_stop=stop_requested)
    if plan is not None:
        repo, version_repo = options.package_repo(plan["name"]), options.version_repo(plan["name"])
        for version, digest in plan["digests"].items():
            fetcher.remember(repo, version, digest)
        for channel in [*DEFAULT_CHANNELS, LTS_CHANNEL]:
            fetcher.remember(version_repo, channel, plan["channels"].get(channel))
        for tag_repo, tag, digest in plan.get("tags") or []:
            fetcher.remember(tag_repo, tag, digest)
    return PackagePuller(fetcher, options)


def source_slots(params: PullParameters, occupy: int = 1) -> Any:
    """Slots of the source registry's global concurrency limit (when the run asks for them)."""
    return registry_slots(params.repository().registry, occupy, enabled=params.concurrency_limits)


def fetch_marker(params: PullParameters, name: str) -> Path:
    """Where a package fetch records its content key, outside the packed working dir."""
    return params.work_root() / "state" / f"{name}.fetch-key"


def fetch_tags_record(params: PullParameters, name: str) -> Path:
    """Where a package fetch records every tag it resolved (:mod:`d8mirror.pull.tag_digests`)."""
    return params.work_root() / "state" / f"{name}.fetch-tags.json"


def remove_default_work_dir(params: PullParameters, *, existed: bool) -> bool:
    """Part A Q9, after a successful pull: the bundle dir holds the bundle. Without ``tmp_dir``
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
    except OSError as exc:      # the bundle is complete: a leftover is no reason to fail it
        logging.getLogger("d8mirror.pull").warning("working dir %s not removed: %s", work, exc)
        return False
    return True


def _archive_json(result: ArchiveResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"path": str(result.path), "files": [str(f) for f in result.files],
            "size": result.size, "sha256": result.sha256}


# -- discovery and planning ---------------------------------------------------------------------
@task(name="discover-packages", **TRANSIENT_RETRIES)
def discover_packages_task(params: PullParameters, lenient: bool = False) -> dict[str, Any]:
    """Package names to mirror (catalog tags, filtered), with warnings."""
    options = params.options()
    with source_slots(params):
        found = discover_packages(client_for(options.source.registry), options, lenient=lenient)
    return {"names": found.names, "warnings": found.warnings}


@task(name="resolve-package", task_run_name="resolve-{name}", **TRANSIENT_RETRIES)
def resolve_package_task(params: PullParameters, name: str) -> dict[str, Any]:
    """Versions of one package and the digests they resolve to now (the content identity)."""
    p = puller(params)
    constraint = params.options().package_filter.constraint_for(name)
    plan = PackageResult(name=name, work_dir=str(params.package_work_dir(name)))
    with source_slots(params):
        versions = p.resolve_versions(name, constraint, plan, layouts=None)
        repo = p.options.package_repo(name)
        digests = {v: p.fetcher.resolve(repo, v) for v in versions}
        channels = {c: p.fetcher.resolve(p.options.version_repo(name), c)
                    for c in p.channels(name)}
    resolved: dict[str, Any] = {"name": name, "versions": versions, "digests": digests,
                                "channels": channels}
    with source_slots(params, params.blob_workers):
        resolved["tags"] = planned_tag_digests(params, p, resolved)     # last: see _plan_key
    return resolved


def fetch_content_key(params: PullParameters, plan: dict[str, Any]) -> str:
    """Identity of a package fetch: source, selection flags, resolved digests, working dir."""
    return content_key("fetch", params.source, params.model_dump(
        include={"include_packages", "exclude_packages", "only_extra_images", "skip_vex_images",
                 "packages_path_suffix", "proxy_registry", "dry_run"}), plan,
        str(params.package_work_dir(plan["name"]).resolve()))


def _plan_key(params: PullParameters, plan: dict[str, Any]) -> str:
    """Identity of a plan without its tag digests: what a fetch's tag record belongs to."""
    return fetch_content_key(params, {k: v for k, v in plan.items() if k != "tags"})


def planned_tag_digests(params: PullParameters, p: PackagePuller,
                        plan: dict[str, Any]) -> TagDigests | None:
    """The digests, now, of every tag the last fetch of this same plan resolved (release
    images, extra images' tags, VEX ``.att`` tags, absent ones as absent), so the fetch's key
    covers them; manifest HEADs, several at once, none for tags the plan resolved already.
    None without such a fetch (the first one, versions or digests moved, a dry-run): no
    cached fetch can match then."""
    if params.dry_run:
        return None
    refs = read_record(fetch_tags_record(params, plan["name"]), _plan_key(params, plan))
    return None if refs is None else current_digests(p.fetcher, refs)


def _fetch_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The content key, unless a cache record for it exists while the working dir does not
    hold that content (it was removed): then a fresh key, so no record stands in for files
    that are not there."""
    params: PullParameters = parameters["params"]
    plan: dict[str, Any] = parameters["plan"]
    key = fetch_content_key(params, plan)
    marker = fetch_marker(params, plan["name"])
    if marker.is_file() and marker.read_text() == key:
        return key
    store = getattr(context, "result_store", None)
    if store is not None and store.exists(key):
        return f"{key}-stale-{uuid.uuid4().hex}"
    return key


@task(name="fetch-package", task_run_name="fetch-{plan[name]}", cache_key_fn=_fetch_key,
      persist_result=True, result_serializer="json", **TRANSIENT_RETRIES)
def fetch_package_task(params: PullParameters, plan: dict[str, Any]) -> dict[str, Any]:
    """Pull one package's images into its working dir (blobs from the shared store)."""
    name = plan["name"]
    work_dir = params.package_work_dir(name)
    marker = fetch_marker(params, name)
    marker.unlink(missing_ok=True)
    with source_slots(params, params.blob_workers):
        constraint = params.options().package_filter.constraint_for(name)
        p = puller(params, plan)
        result = p.pull(name, constraint, work_dir)
    if not params.dry_run:
        # The content is what this fetch resolved: the plan's tags (when it knew them) and
        # every tag the plan could not name; the next plan asks the source for the same tags.
        tags = tag_digests(p.fetcher)
        write_record(fetch_tags_record(params, name), _plan_key(params, plan), tags)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fetch_content_key(params, {**plan, "tags": tags}))
        _cache_for_next_plan(params, plan, tags, result.to_json())
    return result.to_json()


def _cache_for_next_plan(params: PullParameters, plan: dict[str, Any], tags: TagDigests,
                         result: dict[str, Any]) -> None:
    """A plan that could not name the tags (no earlier fetch of these versions) has its
    result cached under a key without them, while the next plan of the same content names
    them: keep the result under that key too, so the next run is a cache hit, not a second
    fetch."""
    if plan.get("tags") == tags:
        return
    context = TaskRunContext.get()
    store = getattr(context, "result_store", None)
    if store is not None:
        store.write(result, key=fetch_content_key(params, {**plan, "tags": tags}))


def _pack_key(params: PullParameters, name: str, *, where: bool = True) -> str | None:
    """Identity of an archive: the package's fetched content and how it is packed (and, with
    ``where``, into which bundle dir)."""
    marker = fetch_marker(params, name)
    if not marker.is_file():
        return None
    bundle = str(Path(params.bundle_dir).resolve()) if where else None
    return content_key("pack", marker.read_text(), bundle, params.chunk_bytes(),
                       params.gost_digest)


def _sidecar_text(path: Path) -> str | None:
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.read_text() if sidecar.is_file() else None


def _packed_already(marker: Path, key: str) -> dict[str, Any] | None:
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
    return dict(record["archive"])


@task(name="pack-package", task_run_name="pack-{fetched[name]}", **TRANSIENT_RETRIES)
def pack_package_task(params: PullParameters, fetched: dict[str, Any]) -> dict[str, Any] | None:
    """``package-<name>.tar`` (atomic, optional chunks, sidecars); None for an empty package.
    An archive already packed from the same content into the same place is kept as it is."""
    name = fetched["name"]
    key = _pack_key(params, name)
    marker = params.work_root() / "state" / f"{name}.pack.json"
    if key is not None and (kept := _packed_already(marker, key)) is not None:
        return kept
    marker.unlink(missing_ok=True)
    archive = _pack_or_link(params, fetched)
    if key is not None and archive is not None:
        files = {f: (Path(f).stat().st_size, _sidecar_text(Path(f))) for f in archive["files"]}
        marker.write_text(json.dumps({"key": key, "archive": archive, "files": files}))
    return archive


def _pack_or_link(params: PullParameters, fetched: dict[str, Any]) -> dict[str, Any] | None:
    """Link the archive packed earlier from the same content (another bundle dir, same
    working dir), else pack it and keep links to it for the next run."""
    name, bundle = fetched["name"], Path(params.bundle_dir)
    cache = ArchiveCache(params.work_root() / "archives")
    content = _pack_key(params, name, where=False)
    if content is not None:
        restored = cache.restore(name, content, bundle, gost=params.gost_digest)
        if restored is not None:
            return restored
    archive = _archive_json(pack_package(Path(fetched["work_dir"]), bundle, name,
                                         chunk_size=params.chunk_bytes(),
                                         gost=params.gost_digest))
    if content is not None and archive is not None:
        cache.store(name, content, archive)
    return archive


# -- package-versions.tar ------------------------------------------------------------------------
@task(name="pull-release-images", task_run_name="release-images-{name}", **TRANSIENT_RETRIES)
def pull_release_images_task(params: PullParameters, name: str) -> dict[str, Any]:
    layout_dir = params.versions_work_dir(name)
    warnings: list[str] = []
    with source_slots(params, params.blob_workers):
        images = pull_release_catalog(puller(params), name, layout_dir, warnings)
    return {"name": name, "layout": str(layout_dir), "images": images, "warnings": warnings}


@task(name="pack-package-versions")
def pack_versions_task(params: PullParameters,
                       pulled: list[dict[str, Any]]) -> dict[str, Any] | None:
    layouts = [(p["name"], Path(p["layout"])) for p in pulled if p["images"]]
    archive = pack_versions(layouts, Path(params.bundle_dir), chunk_size=params.chunk_bytes(),
                            gost=params.gost_digest)
    return _archive_json(archive)



def outcome_file(params: PullParameters, name: str) -> Path:
    """Where mirror-package leaves one package's outcome for a scale-out parent."""
    return params.work_root() / "state" / f"{name}.outcome.json"


# -- scale-out: one child flow run per package ---------------------------------------------------
@task(name="run-package-flow", task_run_name="package-{name}")
def run_package_flow_task(deployment: str, child: dict[str, Any], name: str,
                          timeout_seconds: int) -> dict[str, Any]:
    """Run ``deployment`` (a mirror-package) for one package and wait; the child's outcome
    comes from the shared work dir. Raises when the child did not complete."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    params = PullParameters(**{k: v for k, v in child.items()
                               if k in PullParameters.model_fields})
    outcome = outcome_file(params, name)
    run = cast(FlowRun, run_deployment(name=deployment, parameters={"params": child},
                                       timeout=timeout_seconds, flow_run_name=f"package-{name}"))
    state = run.state
    if state is None or not state.is_completed():
        reason = (state.message if state is not None else "") or "did not complete"
        raise ChildRunFailed(f"flow run {run.name} ({run.id}) for package {name}: "
                             f"{state.name if state else 'no state'}: {reason}")
    doc: dict[str, Any] = json.loads(outcome.read_text())
    return {**doc, "flow_run_id": str(run.id)}


class ChildRunFailed(Exception):
    """A per-package child flow run ended in a non-completed state."""
