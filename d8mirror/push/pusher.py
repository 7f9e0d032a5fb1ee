"""Push one OCI layout into one target repository (R-8.4, Q2, Q17).

For every short tag (``resolve_short_tags``: last wins, the pin wins on a Q2 conflict, which is
warned once; descriptors without a short tag are skipped with a warning):

1. a tag that already resolves to the bundle's digest is not PUT again, but what it needs is
   still checked (a damaged target is repaired): its blobs below, and an index's children
   (HEAD by digest, PUT when missing);
2. every blob of every tag is HEAD-checked in the target and, when missing, mounted from
   another repository that already received it in this run (or, for a blob a delta bundle
   omits, where the pre-check found it: a refused mount fails the layout), else uploaded,
   streamed from the layout's blob file or, for a large blob left in a plain tar by the
   unpack, from its byte range of the archive (``spans``); blobs run on a bounded pool
   (``blob_workers``);
3. manifests are PUT byte-exact: an index's children by digest first, then the tagged one.

A warm re-push therefore costs one HEAD per tag and one per unique blob of the layout, and
writes nothing. ``should_stop()`` (a graceful cancel) stops starting blobs; blobs in flight
finish, and no manifest is PUT once a stop was asked for (:class:`LayoutPushCancelled`).

Results are deterministic (tags sorted); counters say what was uploaded, mounted or present.
Every request, and every blob transfer as a whole (a fresh upload session per try), is retried
on transient errors by ``retry`` (:mod:`d8mirror.retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.bundle import BlobSpans
from d8mirror.errors import DeltaMountError, NotFoundError
from d8mirror.layout import IndexEntry, Layout
from d8mirror.progress import ItemProgress
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.blobsource import LayoutBlobs
from d8mirror.push.index_merge import Provenance
from d8mirror.push.manifests import BlobRef, ManifestNode, read_manifest
from d8mirror.push.short_tags import TagConflict, resolve_short_tags
from d8mirror.registry import RegistryClient
from d8mirror.retry import NO_RETRY, RetryPolicy, default_policy

log = logging.getLogger("d8mirror.push")

Warn = Callable[[str], None]


class LayoutPushResult(BaseModel):
    """What pushing one layout did. ``blobs_present``: blobs the target already held (an
    earlier push's, or the CLI's warm-up's: that one reports its own blobs)."""

    model_config = ConfigDict(frozen=True)

    layout: str = Field(description="The layout's path in the unpacked tree ('' = root).")
    repository: str = Field(description="Target repository path.")
    tags: tuple[tuple[str, str], ...] = Field((), description="(tag, digest), sorted by tag.")
    blobs: tuple[str, ...] = Field(
        (), description="Config and layer digests of every tag (index children's too), sorted."
    )
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    manifests_put: int = 0
    manifests_present: int = 0
    warnings: tuple[str, ...] = ()
    seconds: float | None = Field(None, description="How long the layout took (None: unknown).")


@dataclass(frozen=True)
class TagPlan:
    tag: str
    node: ManifestNode


#: A layout's tags to push with their manifest trees, and the warnings found planning them.
LayoutPlan = tuple[list["TagPlan"], list[str]]


def plan_layout(blobs: LayoutBlobs) -> LayoutPlan:
    """The (tag, manifest tree) pairs to push, sorted by tag, and the warnings found."""
    layout, where = blobs.layout, blobs.layout_rel or "/"
    entries = layout.entries()
    provenance = Provenance.load(layout.path)
    preferred = provenance.q2_preferred(entries)
    resolution = resolve_short_tags(entries, preferred)
    warnings = [
        f"layout {where}: {_describe(c, resolution[c.short_tag], provenance, preferred)}"
        for c in resolution.conflicts
    ]
    warnings += [
        f"layout {where}: descriptor {e.digest} has no short tag "
        "annotation (io.deckhouse.image.short_tag); skipped"
        for e in resolution.untagged
    ]
    plans = [
        TagPlan(tag, read_manifest(blobs, entry.digest, entry.media_type))
        for tag, entry in resolution.items()
    ]
    return plans, warnings


def _describe(
    conflict: TagConflict,
    chosen: IndexEntry,
    provenance: Provenance,
    preferred: Callable[[IndexEntry], bool],
) -> str:
    if provenance.is_pin_alias(chosen):
        why = "the package's own archive pins it"
    elif preferred(chosen):
        why = "the versions catalog decides for a package that is not pinned"
    else:
        return conflict.describe()
    others = ", ".join(d for d in conflict.digests if d != conflict.chosen)
    return (
        f"tag {conflict.short_tag} has {len(conflict.digests)} digests; pushing "
        f"{conflict.chosen} ({why}), ignoring {others}"
    )


class LayoutPushCancelled(Exception):
    """A stop was requested while a layout was being pushed: its blobs in flight finished,
    none of its manifests was PUT (rerun the push to complete it)."""


class _Counters:
    def __init__(self) -> None:
        self.uploaded = self.mounted = self.present = self.bytes = 0


def push_layout(
    client: RegistryClient,
    layout_dir: Path,
    layout_rel: str,
    repository: str,
    *,
    locations: BlobLocations | None = None,
    blob_workers: int = 4,
    warn: Warn | None = None,
    retry: RetryPolicy | None = None,
    spans: BlobSpans | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: ItemProgress | None = None,
    planned: LayoutPlan | None = None,
) -> LayoutPushResult:
    """Push every short tag of the layout at ``layout_dir`` into ``repository`` (a path on
    ``client``'s registry). ``layout_rel`` is the layout's path in the unpacked tree, under
    which ``spans`` (blobs left in their archive) are found. Raises the registry's typed
    errors, or :class:`LayoutPushCancelled` once ``should_stop()``; safe to call again.
    ``progress`` (the layout's item) is told its blobs and manifests, the bytes uploaded per
    chunk, and what the target already held or mounted (reused). ``planned``: the layout's
    :func:`plan_layout` already made from the same tree (not made again)."""
    retry = retry or default_policy()
    source = LayoutBlobs(
        Layout(layout_dir), layout_rel, spans if spans is not None else BlobSpans()
    )
    plans, warnings = planned if planned is not None else plan_layout(source)
    for message in warnings:
        (warn or log.warning)(message)
    if progress is not None:
        progress.expect(expected_sizes(plans))
    locations = locations or BlobLocations()
    todo, already = _split_present(client, repository, plans, retry)
    counters = _Counters()
    # present tags too: repair a damaged target
    for outcome, blob in _push_blobs(
        client,
        source,
        repository,
        plans,
        locations=locations,
        blob_workers=blob_workers,
        retry=retry,
        should_stop=should_stop,
        progress=progress,
    ):
        _count(counters, outcome, blob.size)
    if should_stop():
        raise LayoutPushCancelled(
            f"push of layout {layout_rel or '/'} to {repository} was "
            f"cancelled ({counters.uploaded} blobs uploaded)"
        )
    manifests_put = _put_missing_children(client, repository, already, retry)
    manifests_put += _put_manifests(client, repository, todo, retry)
    if progress is not None:
        _report_manifests(progress, todo, already)
    for plan in todo:
        log.info("Pushed %s:%s", repository, plan.tag)
    tags = tuple(sorted((p.tag, p.node.digest) for p in plans))
    return LayoutPushResult(
        layout=layout_rel,
        repository=repository,
        tags=tags,
        blobs=tuple(b.digest for b in _unique_blobs(p.node for p in plans)),
        blobs_uploaded=counters.uploaded,
        blobs_mounted=counters.mounted,
        blobs_present=counters.present,
        bytes_uploaded=counters.bytes,
        manifests_put=manifests_put,
        manifests_present=len(already),
        warnings=tuple(warnings),
    )


def expected_sizes(plans: list[TagPlan]) -> dict[str, int]:
    """Every blob and manifest the layout's tags need, digest → size."""
    sizes = {b.digest: max(b.size, 0) for b in _unique_blobs(p.node for p in plans)}
    for plan in plans:
        for node in plan.node.put_order():
            sizes.setdefault(node.digest, len(node.data))
    return sizes


def _report_manifests(progress: ItemProgress, todo: list[TagPlan], already: list[TagPlan]) -> None:
    """Manifests PUT count as moved; those of tags already right, as reused."""
    for plans, put in ((todo, True), (already, False)):
        for plan in plans:
            for node in plan.node.put_order():
                if put:
                    progress.blob_done(node.digest, len(node.data))
                else:
                    progress.reused(node.digest, len(node.data))


def _split_present(
    client: RegistryClient, repository: str, plans: list[TagPlan], retry: RetryPolicy
) -> tuple[list[TagPlan], list[TagPlan]]:
    todo: list[TagPlan] = []
    already: list[TagPlan] = []
    for plan in plans:
        present = retry.call(
            partial(_tag_points_at, client, repository, plan), what=f"check {repository}:{plan.tag}"
        )
        (already if present else todo).append(plan)
    return todo, already


def _tag_points_at(client: RegistryClient, repository: str, plan: TagPlan) -> bool:
    try:
        return client.head_manifest(repository, plan.tag).digest == plan.node.digest
    except NotFoundError:
        return False


def _put_missing_children(
    client: RegistryClient, repository: str, plans: list[TagPlan], retry: RetryPolicy
) -> int:
    """An index whose tag is already right: PUT any child manifest the target lost."""
    put = 0
    seen: set[str] = set()
    for plan in plans:
        for node in plan.node.put_order()[:-1]:
            if node.digest in seen:
                continue
            seen.add(node.digest)
            if not retry.call(
                partial(_manifest_exists, client, repository, node.digest),
                what=f"check {repository}@{node.digest}",
            ):
                retry.call(
                    partial(
                        client.put_manifest, repository, node.digest, node.data, node.media_type
                    ),
                    what=f"put manifest {repository}@{node.digest}",
                )
                put += 1
    return put


def _manifest_exists(client: RegistryClient, repository: str, digest: str) -> bool:
    try:
        client.head_manifest(repository, digest)
    except NotFoundError:
        return False
    return True


def _unique_blobs(nodes: Iterable[ManifestNode]) -> list[BlobRef]:
    seen: dict[str, BlobRef] = {}
    for node in nodes:
        for blob in node.all_blobs():
            seen.setdefault(blob.digest, blob)
    return sorted(seen.values(), key=lambda b: b.digest)


def _ensure_blob(
    client: RegistryClient,
    source: LayoutBlobs,
    repository: str,
    blob: BlobRef,
    locations: BlobLocations,
    progress: ItemProgress | None = None,
) -> str:
    """ "present", "mounted" or "uploaded". A blob a delta bundle omits (absent from the
    layout) can only be mounted: DeltaMountError when that is refused."""
    if client.blob_exists(repository, blob.digest):
        locations.remember(blob.digest, repository)
        return "present"
    origin = locations.source_for(blob.digest, repository)
    if origin is not None and client.mount_blob(repository, blob.digest, origin):
        locations.remember(blob.digest, repository)
        return "mounted"
    if locations.is_omitted(blob.digest) and not source.holds(blob.digest):
        raise DeltaMountError(_unmountable(repository, blob.digest, origin))
    moved = None if progress is None else partial(progress.moved, blob.digest)
    source.upload(client, repository, blob.digest, blob.size if blob.size >= 0 else None, moved)
    locations.remember(blob.digest, repository)
    return "uploaded"


def _unmountable(repository: str, digest: str, origin: str | None) -> str:
    why = (
        f"the registry refused to mount it from {origin} (it answered with an upload "
        "session, cancelled): it does not allow cross-repository mounts there"
        if origin is not None
        else "no repository of the target is known to hold it"
    )
    return (
        f"blob {digest} is omitted by the delta bundle and not in {repository}, and {why}. "
        "Push the full bundle instead, or allow blob mounts within the target registry."
    )


def _push_blobs(
    client: RegistryClient,
    source: LayoutBlobs,
    repository: str,
    plans: list[TagPlan],
    *,
    locations: BlobLocations,
    blob_workers: int,
    retry: RetryPolicy,
    should_stop: Callable[[], bool],
    progress: ItemProgress | None = None,
) -> list[tuple[str, BlobRef]]:
    """Every blob of ``plans`` HEAD-checked, mounted or uploaded on a bounded pool:
    (outcome, blob) pairs, outcome "present", "mounted", "uploaded" or "stopped"."""
    blobs = _unique_blobs(p.node for p in plans)
    if not blobs:
        return []

    def one(blob: BlobRef) -> str:
        if should_stop():
            return "stopped"
        outcome: str = retry.call(
            lambda: _ensure_blob(client, source, repository, blob, locations, progress),
            what=f"push blob {repository}@{blob.digest}",
        )
        if progress is not None:
            size = max(blob.size, 0)
            if outcome == "uploaded":
                progress.blob_done(blob.digest, size)
            else:
                progress.reused(blob.digest, size)
        return outcome

    with ThreadPoolExecutor(
        max_workers=max(1, blob_workers), thread_name_prefix="push-blob"
    ) as pool:
        return list(zip(pool.map(one, blobs), blobs, strict=True))


def push_layout_blobs(
    client: RegistryClient,
    layout_dir: Path,
    layout_rel: str,
    repository: str,
    *,
    locations: BlobLocations,
    blob_workers: int = 4,
    spans: BlobSpans | None = None,
    retry: RetryPolicy = NO_RETRY,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """The first half of :func:`push_layout`: only the blobs of every short tag (no
    manifest, so no tag appears), by default without retries (the CLI's warm-up; the push
    that follows finds them present and says so). Stops starting blobs once
    ``should_stop()``; the first error ends it. Returns the blobs put."""
    source = LayoutBlobs(
        Layout(layout_dir), layout_rel, spans if spans is not None else BlobSpans()
    )
    plans, _warnings = plan_layout(source)
    outcomes = _push_blobs(
        client,
        source,
        repository,
        plans,
        locations=locations,
        blob_workers=blob_workers,
        retry=retry,
        should_stop=should_stop,
    )
    return sum(1 for outcome, _blob in outcomes if outcome in ("uploaded", "mounted"))


def _count(counters: _Counters, outcome: str, size: int) -> None:
    if outcome == "uploaded":
        counters.uploaded += 1
        counters.bytes += max(size, 0)
    elif outcome == "mounted":
        counters.mounted += 1
    elif outcome == "present":
        counters.present += 1


def _put_manifests(
    client: RegistryClient, repository: str, plans: list[TagPlan], retry: RetryPolicy
) -> int:
    def put_one(reference: str, node: ManifestNode) -> None:
        retry.call(
            lambda: client.put_manifest(repository, reference, node.data, node.media_type),
            what=f"put manifest {repository}:{reference}",
        )

    put = 0
    done: set[str] = set()
    for plan in plans:
        for node in plan.node.put_order()[:-1]:
            if node.digest not in done:
                put_one(node.digest, node)
                done.add(node.digest)
                put += 1
        put_one(plan.tag, plan.node)
        put += 1
    return put
