"""Fetch images from a registry into the shared blob store and into OCI layouts.

Blobs are downloaded once per content digest (the store is shared by every layout of a run and
reused across runs), streamed to disk and verified. Layout writes are idempotent per
(short tag, digest) and happen only after every blob of the image is in place.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import overload

from d8mirror.blobstore import BlobStore
from d8mirror.errors import (
    InvalidManifestError,
    ManifestNotFoundError,
    MirrorError,
    ProtocolError,
    add_context,
)
from d8mirror.imagefs import read_file_from_layers
from d8mirror.layout import Layout
from d8mirror.mediatypes import MAX_MANIFEST_BYTES
from d8mirror.progress import Batched, ItemProgress
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

from .delta import BaseBlobs
from .manifests import MAX_INDEX_DEPTH, amd64_child, embedded_media_type, parse_manifest


class FetchCancelled(MirrorError):
    """The run was asked to stop; nothing is reported as missing because of it."""


@dataclass(frozen=True)
class ImageClosure:
    """An image as stored: the manifest that lands in a layout and every blob it needs."""

    digest: str
    media_type: str
    size: int
    blobs: tuple[str, ...]  # manifest itself first, then config and layers
    layers: tuple[str, ...]  # layer digests bottom → top (empty for an index)
    repository: str = ""  # where it was fetched from (to fetch a left-out layer to read it)
    layer_sizes: tuple[int, ...] = ()  # of ``layers``, in the same order


@dataclass
class FetchStats:
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_reused: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, fetched: int, size: int) -> None:
        with self._lock:
            if fetched:
                self.blobs_fetched += 1
                self.bytes_fetched += size
            else:
                self.blobs_reused += 1


class SourceAnswers:
    """What the source answered during one run: tag → digest (None: not found) and
    repository → tag list, shared by the run's fetchers (planning, sizing, fetching, release
    images), so a tag is asked once per run and one run sees one consistent source. Each
    fetcher still keeps its own record of the tags it used (:meth:`ImageFetcher.resolved`).
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, str], str | None] = {}
        self._tags: dict[str, list[str]] = {}

    def digest(self, repository: str, tag: str) -> tuple[bool, str | None]:
        """(known, digest) of ``repository:tag``."""
        with self._lock:
            key = (repository, tag)
            return (key in self._digests, self._digests.get(key))

    def keep_digest(self, repository: str, tag: str, digest: str | None) -> None:
        with self._lock:
            self._digests.setdefault((repository, tag), digest)

    def tags(self, repository: str) -> list[str] | None:
        with self._lock:
            listed = self._tags.get(repository)
            return None if listed is None else list(listed)

    def keep_tags(self, repository: str, tags: list[str]) -> None:
        with self._lock:
            self._tags.setdefault(repository, list(tags))


class UsedBlobs:
    """Every digest one run's fetchers read from or put in the blob store (manifests, indexes,
    configs, layers): with its layouts, what the run references in a kept cache
    (:mod:`d8mirror.cache_gc`). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: set[str] = set()

    def add(self, digest: str) -> None:
        with self._lock:
            self._digests.add(digest)

    def digests(self) -> set[str]:
        with self._lock:
            return set(self._digests)


class ImageFetcher:
    """Pulls images of one registry into a blob store; bounded blob parallelism.

    Every request (tag resolution, manifest, tag list) and every blob transfer is retried on
    transient errors by ``retry`` (:mod:`d8mirror.retry`), so a fault costs one request.
    ``should_stop`` is asked before every piece of work and, with ``stop_in_flight``, while a
    blob downloads too (its ``.partial`` is kept for a rerun); without it, blobs already
    downloading finish (their bytes are wanted by whoever works next on the same store).

    ``progress`` (one package's :class:`~d8mirror.progress.ItemProgress`, or None) is told
    what each image needs as its manifest is read (manifest, config, layers), which blobs the
    store already holds (reused), and the bytes of each download as they stream (per chunk
    of the client, never per byte). ``used`` (the run's :class:`UsedBlobs`, or None) is told
    every digest read from or put in the store.

    ``base`` (a delta pull's :class:`~d8mirror.pull.delta.BaseBlobs`): configs and layers it
    lists are not fetched with their image (manifests always are); :meth:`read_file` fetches
    a listed layer only when it must read it and the store lacks it.
    """

    def __init__(
        self,
        client: RegistryClient,
        store: BlobStore,
        *,
        blob_workers: int = 4,
        should_stop: Callable[[], bool] | None = None,
        retry: RetryPolicy | None = None,
        stop_in_flight: bool = True,
        progress: ItemProgress | None = None,
        answers: SourceAnswers | None = None,
        used: UsedBlobs | None = None,
        base: BaseBlobs | None = None,
    ) -> None:
        self.client = client
        self.used = used
        self.base = base
        self.answers = answers if answers is not None else SourceAnswers()
        self.progress = progress
        self._images_seen: set[str] = set()
        self._images_done: set[str] = set()
        self.store = store
        self.stop_in_flight = stop_in_flight
        self.retry = retry or default_policy()
        self.blob_workers = max(1, blob_workers)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.should_stop = should_stop or (lambda: False)
        self.stats = FetchStats()
        self._resolved: dict[tuple[str, str], str | None] = {}
        self._resolved_lock = threading.Lock()

    # -- resolution -------------------------------------------------------------------------
    def check_stop(self) -> None:
        if self.should_stop():
            raise FetchCancelled("pull cancelled")

    def resolve(self, repository: str, tag: str) -> str | None:
        """Digest of ``repository:tag``, or None when the registry says it does not exist.

        Only "not found" means missing (Q12); every other error propagates. A tag is
        asked once per run (:class:`SourceAnswers`, shared by the run's fetchers): later
        calls (planning, sizing, layouts, VEX, release images) get the first answer, so one
        run sees one consistent source.
        """
        self.check_stop()
        with self._resolved_lock:
            if (repository, tag) in self._resolved:
                return self._resolved[(repository, tag)]
        known, answer = self.answers.digest(repository, tag)
        if known:
            self.remember(repository, tag, answer)
            return answer
        try:
            digest: str | None = self.retry.call(
                lambda: self.client.head_manifest(repository, tag).digest,
                what=f"resolve {repository}:{tag}",
            )
        except ManifestNotFoundError:
            digest = None
        self.remember(repository, tag, digest)
        return digest

    def remember(self, repository: str, tag: str, digest: str | None) -> None:
        """Record what ``repository:tag`` resolved to (e.g. by the run's planning step)."""
        self.answers.keep_digest(repository, tag, digest)
        with self._resolved_lock:
            self._resolved.setdefault((repository, tag), digest)

    def resolved(self) -> dict[tuple[str, str], str | None]:
        """Every ``(repository, tag)`` this fetcher resolved or was told, with its answer."""
        with self._resolved_lock:
            return dict(self._resolved)

    def resolve_many(self, refs: Iterable[tuple[str, str]]) -> None:
        """Resolve ``(repository, tag)`` pairs not resolved yet, several at once (manifest
        HEADs only); the answers are kept as :meth:`resolve` keeps them, errors propagate."""
        known = self.resolved()
        pending = [ref for ref in dict.fromkeys(refs) if ref not in known]
        if len(pending) <= 1 or self.blob_workers == 1:
            for repository, tag in pending:
                self.resolve(repository, tag)
            return
        with ThreadPoolExecutor(
            max_workers=self.blob_workers, thread_name_prefix="d8mirror-resolve"
        ) as pool:
            for future in [pool.submit(self.resolve, repo, tag) for repo, tag in pending]:
                future.result()

    def prefetch(self, refs: Iterable[tuple[str, str]]) -> None:
        """Resolve ``(repository, tag or digest)`` pairs and fetch their images into the store,
        several images at once. Only a cache warmer: errors are left for the ordered pass that
        follows (which meets them again and reports them in order)."""
        pending = list(dict.fromkeys(refs))
        if len(pending) <= 1 or self.blob_workers == 1:
            return
        with ThreadPoolExecutor(
            max_workers=self.blob_workers, thread_name_prefix="d8mirror-image"
        ) as pool:
            futures = [pool.submit(self._prefetch_one, repo, ref) for repo, ref in pending]
            for future in futures:
                future.exception()

    def _prefetch_one(self, repository: str, ref: str) -> None:
        try:
            digest = ref if ref.startswith("sha256:") else self.resolve(repository, ref)
            if digest is not None:
                self.image(repository, digest)
        except MirrorError:
            pass

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (retried like every other request), listed once per
        run (:class:`SourceAnswers`)."""
        self.check_stop()
        listed = self.answers.tags(repository)
        if listed is not None:
            return listed
        listed = self.retry.call(
            lambda: self.client.list_tags(repository), what=f"list tags of {repository}"
        )
        self.answers.keep_tags(repository, listed)
        return listed

    # -- manifests and blobs ----------------------------------------------------------------
    def _manifest(
        self, repository: str, digest: str, deadline: float | None = None
    ) -> tuple[str, bytes]:
        self._use(digest)
        if self.store.has(digest) and self.store.verified(digest):
            data = self.store.read_bytes(digest, limit=MAX_MANIFEST_BYTES)
            media_type = embedded_media_type(data)
            if media_type is not None:
                self._report_manifest(digest, len(data), reused=True)
                return media_type, data
        manifest = self.retry.call(
            lambda: self.client.get_manifest(repository, digest, deadline=deadline),
            what=f"get manifest {repository}@{digest}",
            deadline=deadline,
        )
        if manifest.digest != digest:
            raise ProtocolError(
                f"registry served {manifest.digest} for {repository}@{digest}",
                url=f"{repository}@{digest}",
            )
        self.store.put_bytes(manifest.data)
        self._report_manifest(digest, len(manifest.data), reused=False)
        return manifest.media_type, manifest.data

    def _use(self, digest: str) -> None:
        if self.used is not None:
            self.used.add(digest)

    def _report_manifest(self, digest: str, size: int, *, reused: bool) -> None:
        if self.progress is None:
            return
        self.progress.expect({digest: size})
        if reused:
            self.progress.reused(digest, size)
        else:
            self.progress.blob_done(digest, size)

    def _count_image(self, digest: str, blobs: Sequence[tuple[str, int]], *, done: bool) -> None:
        """Declare an image's blobs and count it once per fetcher (prefetch, then record)."""
        if self.progress is None:
            return
        seen = self._images_done if done else self._images_seen
        with self._resolved_lock:
            if digest in seen:
                return
            seen.add(digest)
        if done:
            self.progress.image_done()
        else:
            self.progress.expect(list(blobs))
            self.progress.expect_images(1)

    def image(self, repository: str, digest: str) -> ImageClosure:
        """Fetch the manifest and every blob of ``repository@digest`` into the store.

        An index (multi-arch) is flattened to its linux/amd64 image (R-6.3), following at
        most :data:`MAX_INDEX_DEPTH` nested indexes. A manifest that cannot be pulled as it is
        raises InvalidManifestError before any of its blobs is fetched. The whole image, retries
        included, must be done within the client's ``limits.image_timeout``.
        """
        return self._image(repository, digest, digest, 0, self.client.limits.image_deadline())

    def _image(
        self, repository: str, digest: str, top: str, depth: int, deadline: float | None
    ) -> ImageClosure:
        self.check_stop()
        if depth > MAX_INDEX_DEPTH:
            raise InvalidManifestError(
                f"image {repository}@{top} nests image indexes more than {MAX_INDEX_DEPTH} "
                f"levels deep (at {digest}); refusing to follow it"
            )
        media_type, data = self._manifest(repository, digest, deadline)
        manifest = parse_manifest(data, media_type, f"{repository}@{digest}")
        if manifest.is_index:
            child = amd64_child(manifest, f"{repository}@{digest}")
            return self._image(repository, child, top, depth + 1, deadline)
        blobs = [manifest.config] if manifest.config else []
        layers = list(manifest.layers)
        wanted = [b for b in [*blobs, *layers] if not self.omits(b[0])]
        self._count_image(digest, wanted, done=False)
        try:
            self.ensure_blobs(repository, wanted, deadline=deadline)
        except MirrorError as exc:
            add_context(exc, f"while fetching image {repository}@{digest}")
            raise
        self._count_image(digest, (), done=True)
        return ImageClosure(
            digest=digest,
            media_type=media_type,
            size=len(data),
            blobs=(digest, *[d for d, _ in blobs], *[d for d, _ in layers]),
            layers=tuple(d for d, _ in layers),
            repository=repository,
            layer_sizes=tuple(n for _, n in layers),
        )

    def omits(self, digest: str) -> bool:
        """Whether ``digest`` is left out of this (delta) pull: the base receipt lists it."""
        return self.base is not None and self.base.omits(digest)

    def ensure_blobs(
        self, repository: str, blobs: Sequence[tuple[str, int]], *, deadline: float | None = None
    ) -> None:
        unique = list(dict.fromkeys(blobs))
        if len(unique) <= 1 or self.blob_workers == 1:
            for digest, size in unique:
                self._ensure_blob(repository, digest, size, deadline)
            return
        pool = self._blob_pool()
        for future in [
            pool.submit(self._ensure_blob, repository, d, s, deadline) for d, s in unique
        ]:
            future.result()

    def _blob_pool(self) -> ThreadPoolExecutor:
        """One bounded pool per fetcher, reused by every image (threads are not free); shut
        down when the fetcher is garbage collected."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.blob_workers, thread_name_prefix="d8mirror-blob"
                )
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def _ensure_blob(
        self, repository: str, digest: str, size: int, deadline: float | None = None
    ) -> None:
        self.check_stop()
        self._use(digest)
        with self.store.download_lock(digest):
            if self.store.has(digest, size=size) and self.store.verified(digest):
                self.stats.add(0, size)
                if self.progress is not None:
                    self.progress.reused(digest, size)
                return
            incoming = self.store.incoming_path(digest)
            progress = self._on_chunk(digest)
            written = self.retry.call(
                lambda: self.client.fetch_blob(
                    repository, digest, incoming, size=size, deadline=deadline, on_progress=progress
                ),
                what=f"fetch blob {repository}@{digest}",
                deadline=deadline,
            )
            self.store.commit(digest, incoming, trusted=True)
            self.stats.add(1, written)
            if self.progress is not None:
                self.progress.blob_done(digest, written)

    def _on_chunk(self, digest: str) -> Callable[[int], None] | None:
        """What the client calls per chunk it writes: the stop check (``stop_in_flight``)
        and the bytes moved, whichever are wanted."""
        item, stop = self.progress, self.stop_in_flight
        if item is None:
            return (lambda _n: self.check_stop()) if stop else None
        moved = Batched(partial(item.moved, digest))

        def chunk(count: int) -> None:
            if stop:
                self.check_stop()
            moved(count)

        return chunk

    # -- layouts ----------------------------------------------------------------------------
    def pull_into(
        self, layout: Layout, repository: str, digest: str, *, short_tag: str, ref_name: str
    ) -> ImageClosure:
        """Fetch ``repository@digest`` and record it in ``layout`` under ``short_tag``."""
        closure = self.image(repository, digest)
        layout.add_manifest(
            digest=closure.digest,
            media_type=closure.media_type,
            size=closure.size,
            short_tag=short_tag,
            ref_name=ref_name,
            blobs=closure.blobs,
            store=self.store,
            leave_out=self.base.blobs if self.base is not None else frozenset(),
        )
        return closure

    def read_file(self, closure: ImageClosure, name: str, *, top_first_any: bool) -> bytes | None:
        """A file from the image's flattened filesystem (its layers are in the store, but for
        those a delta pull left out: see :meth:`read_layers`)."""
        layers = list(zip(closure.layers, closure.layer_sizes, strict=False))
        if len(layers) != len(closure.layers):  # a closure made without sizes
            layers = [(d, 0) for d in closure.layers]
        return self.read_layers(closure.repository, layers, name, top_first_any=top_first_any)

    def read_layers(
        self,
        repository: str,
        layers: Sequence[tuple[str, int]],
        name: str,
        *,
        top_first_any: bool,
    ) -> bytes | None:
        """A file from ``layers`` (bottom → top). Layers are read from the top and only as far
        as needed; a layer the base receipt lists is downloaded first when the store lacks it
        (recorded as read anyway, never packed)."""
        return read_file_from_layers(
            _LayersOnDemand(self, repository, layers), name, top_first_any=top_first_any
        )

    def layer_path(self, repository: str, digest: str, size: int) -> Path:
        """Where layer ``digest`` is in the store; a left-out one is fetched first if missing.
        Either way the run used it (its cache gc keeps it: a rerun reads it again)."""
        self._use(digest)
        if self.omits(digest) and not (self.store.has(digest) and self.store.verified(digest)):
            if self.progress is not None:
                self.progress.expect({digest: size})
            self._ensure_blob(repository, digest, size)
            if self.base is not None:  # missing when asked: downloaded for this read
                self.base.read_anyway(digest, size)
        return self.store.path(digest)


class _LayersOnDemand(Sequence[Path]):
    """An image's layer paths, each made available only when the reader reaches it."""

    def __init__(
        self, fetcher: ImageFetcher, repository: str, layers: Sequence[tuple[str, int]]
    ) -> None:
        self.fetcher, self.repository, self.layers = fetcher, repository, list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    @overload
    def __getitem__(self, index: int) -> Path: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Path]: ...
    def __getitem__(self, index: int | slice) -> Path | Sequence[Path]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        digest, size = self.layers[index]
        return self.fetcher.layer_path(self.repository, digest, size)


def dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
