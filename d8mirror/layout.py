"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/sha256/``) and their index files.

A :class:`Layout` is one directory; every write of ``index.json`` is atomic (temp file, then
``os.replace``) and serialised by an exclusive ``flock`` on the layout directory
(:func:`layout_lock`), so several threads (and several ``Layout`` objects for one path, or
several processes) may add images to one layout. ``index.json`` is re-read for every
operation: it is small, and the file is the only state (a crash loses nothing that was written).

Pull side (R-6.2): :meth:`Layout.add_manifest` links the image's whole blob closure from the
shared :class:`~d8mirror.blobstore.BlobStore` and only then appends the descriptor, so a failed
write is really redone by the next attempt (PR #393). Channel aliases (R-4) are
:meth:`Layout.retag` with :func:`alias_ref_name` (Q3: host:port safe).

Push side: the index merge and provenance of the unpacked tree live in
:mod:`d8mirror.push.index_merge`, short-tag resolution in :mod:`d8mirror.push.short_tags`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.blobstore import BlobStore, read_capped
from d8mirror.errors import IntegrityError, LayoutError, wrap_os_error
from d8mirror.files import FILE_MODE, write_atomic
from d8mirror.hashing import sha256_file_digest
from d8mirror.mediatypes import (
    ANNOTATION_REF_NAME,
    ANNOTATION_SHORT_TAG,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_LAYOUT_VERSION,
)
from d8mirror.reference import is_valid_digest, validate_digest, validate_tag

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
_DESCRIPTOR_KEYS = ("mediaType", "digest", "size", "annotations")
_MAX_INDEX_BYTES = 64 * 1024 * 1024


# -- descriptors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexEntry:
    """One descriptor of ``index.json``; unknown fields are kept verbatim in ``extra``."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def short_tag(self) -> str | None:
        return self.annotations.get(ANNOTATION_SHORT_TAG)

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(ANNOTATION_REF_NAME)

    @property
    def key(self) -> tuple[str, str | None]:
        """The merge dedupe key (digest, ref name)."""
        return self.digest, self.ref_name

    def with_tags(self, short_tag: str, ref_name: str) -> IndexEntry:
        annotations = {
            **self.annotations,
            ANNOTATION_SHORT_TAG: short_tag,
            ANNOTATION_REF_NAME: ref_name,
        }
        return IndexEntry(self.media_type, self.digest, self.size, annotations, dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> IndexEntry:
        """Parse a descriptor; LayoutError when it is malformed (bad digest, size, types)."""
        if not isinstance(obj, Mapping):
            raise LayoutError(f"index descriptor is not a JSON object: {obj!r:.200}")
        digest, media_type, size = obj.get("digest"), obj.get("mediaType"), obj.get("size")
        if not isinstance(digest, str) or not is_valid_digest(digest):
            raise LayoutError(
                f"index descriptor has an invalid digest {digest!r:.100}: "
                "only sha256:<64 lowercase hex> is accepted"
            )
        if not isinstance(media_type, str) or not media_type:
            raise LayoutError(f"index descriptor {digest} has no mediaType")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise LayoutError(f"index descriptor {digest} has an invalid size {size!r:.50}")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise LayoutError(f"index descriptor {digest} has non-string annotations")
        extra = {k: v for k, v in obj.items() if k not in _DESCRIPTOR_KEYS}
        return cls(media_type, digest, size, dict(annotations), extra)


def alias_ref_name(ref_name: str, tag: str) -> str:
    """``ref_name`` with its tag replaced by ``tag`` (Q3: the tag is cut after the last
    ``/``, so ``host:port`` survives); a digest (``@sha256:…``) is dropped."""
    base = ref_name.split("@", 1)[0]
    colon = base.rfind(":")
    if colon > base.rfind("/"):
        base = base[:colon]
    return f"{base}:{tag}"


# -- files ---------------------------------------------------------------------------------------
def write_json_atomic(path: Path, doc: Any, *, mode: int = FILE_MODE) -> None:
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), mode=mode)


def read_json(path: Path, what: str) -> Any:
    try:
        data = read_capped(path, limit=_MAX_INDEX_BYTES, what=what)
        return json.loads(data)
    except FileNotFoundError as exc:
        raise LayoutError(f"{what} {path} is missing: not an OCI image layout") from exc
    except (OSError, ValueError) as exc:
        raise LayoutError(
            f"{what} {path} is unreadable or not JSON ({exc}): "
            "re-create the layout or re-extract the archive"
        ) from exc


def parse_index(doc: Any, where: str) -> list[IndexEntry]:
    """The descriptors of an index document; LayoutError naming ``where`` when malformed."""
    if not isinstance(doc, Mapping):
        raise LayoutError(f"{where}: index is not a JSON object")
    manifests = doc.get("manifests")
    if manifests is None:
        return []
    if not isinstance(manifests, list):
        raise LayoutError(f"{where}: 'manifests' is not a list")
    try:
        return [IndexEntry.from_json(item) for item in manifests]
    except LayoutError as exc:
        raise LayoutError(f"{where}: {exc}") from exc


def read_index_file(path: Path) -> dict[str, Any]:
    """A validated ``index.json`` document (LayoutError when missing or malformed)."""
    doc = read_json(path, "index")
    parse_index(doc, str(path))
    return dict(doc)


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


#: flock errors of filesystems that cannot lock a directory (some NFS mounts).
_NO_DIRECTORY_LOCKS = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})


@contextmanager
def layout_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (which must exist): writers of one layout's
    ``index.json`` (threads with their own open file, or other processes) take turns. Where
    the filesystem cannot lock a directory, only the caller's own lock holds (each
    :class:`Layout` object also serialises its own writers)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise wrap_os_error(exc, str(directory)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_DIRECTORY_LOCKS:
                raise wrap_os_error(exc, str(directory)) from exc
        yield
    finally:
        os.close(fd)  # releases the lock


# -- layouts -------------------------------------------------------------------------------------
class Layout:
    """An OCI image layout directory; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # this object's writers; layout_lock: everyone's

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @classmethod
    def create(cls, path: Path) -> Layout:
        """A fresh layout: ``oci-layout``, an empty ``index.json`` and ``blobs/sha256/``."""
        path = Path(path)
        try:
            (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise wrap_os_error(exc, str(path)) from exc
        write_json_atomic(path / OCI_LAYOUT_FILE, {"imageLayoutVersion": OCI_LAYOUT_VERSION})
        write_json_atomic(path / INDEX_FILE, _empty_index())
        return cls(path)

    @classmethod
    def recreate(cls, path: Path) -> Layout:
        """:meth:`create` after removing whatever ``path`` held (a previous run's layouts, with
        their index entries and blob links): a pull builds every layout from its own plan only,
        as ``d8``'s ``NewImageLayout`` does. Blobs stay in the shared store."""
        path = Path(path)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise wrap_os_error(exc, str(path)) from exc
        return cls.create(path)

    @classmethod
    def open(cls, path: Path) -> Layout:
        """An existing layout; LayoutError naming the path when it is not a valid one."""
        path = Path(path)
        marker = read_json(path / OCI_LAYOUT_FILE, "layout marker")
        if not isinstance(marker, Mapping) or "imageLayoutVersion" not in marker:
            raise LayoutError(
                f"{path / OCI_LAYOUT_FILE} has no imageLayoutVersion: not an OCI image layout"
            )
        layout = cls(path)
        layout.entries()
        return layout

    @classmethod
    def open_or_create(cls, path: Path) -> Layout:
        path = Path(path)
        if (path / INDEX_FILE).exists():
            return cls.open(path)
        return cls.create(path)

    # -- index ------------------------------------------------------------------------------
    def _read_doc(self) -> dict[str, Any]:
        return read_index_file(self.index_path)

    def _write(self, doc: dict[str, Any], entries: Sequence[IndexEntry]) -> None:
        doc = {**doc, "manifests": [e.to_json() for e in entries]}
        doc.setdefault("schemaVersion", 2)
        doc.setdefault("mediaType", OCI_INDEX)
        write_json_atomic(self.index_path, doc)

    def entries(self) -> list[IndexEntry]:
        return parse_index(self._read_doc(), str(self.index_path))

    def has_images(self) -> bool:
        return bool(self.entries())

    def find(self, short_tag: str) -> IndexEntry | None:
        """The last descriptor with ``short_tag`` (the one push would use)."""
        found = [e for e in self.entries() if e.short_tag == short_tag]
        return found[-1] if found else None

    def missing(self, planned_short_tags: Iterable[str]) -> list[str]:
        """Planned short tags with no descriptor in this layout (R-6.4), sorted."""
        present = {e.short_tag for e in self.entries()}
        return sorted(set(planned_short_tags) - present)

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where ``digest`` lives; anything but ``sha256:<64 hex>`` is refused (LayoutError)."""
        if not is_valid_digest(digest):
            raise LayoutError(
                f"refusing blob digest {digest!r:.100} in layout {self.path}: "
                "only sha256:<64 lowercase hex> is accepted"
            )
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        path = self.blob_path(digest)
        try:
            return read_capped(path, limit=limit, what=f"blob {digest}")
        except FileNotFoundError as exc:
            raise LayoutError(
                f"layout {self.path} lacks blob {digest}: the layout is incomplete; pull it again"
            ) from exc

    # -- writes -----------------------------------------------------------------------------
    def add_manifest(
        self,
        *,
        digest: str,
        media_type: str,
        size: int,
        short_tag: str,
        ref_name: str,
        blobs: Iterable[str],
        store: BlobStore,
        leave_out: Container[str] = frozenset(),
    ) -> bool:
        """Link the image's blob closure from ``store``, then record it under ``short_tag``.

        Idempotent per (short tag, digest): returns False when that pair is already recorded.
        The blobs are (re)linked first either way, so a descriptor never points at nothing,
        except the configs and layers in ``leave_out`` (a delta bundle's: the target holds
        them, :mod:`d8mirror.pull.delta`); the manifest itself is always linked.
        """
        entry = IndexEntry(
            media_type,
            validate_digest(digest),
            size,
            {ANNOTATION_SHORT_TAG: validate_tag(short_tag), ANNOTATION_REF_NAME: ref_name},
        )
        for blob in dict.fromkeys([digest, *blobs]):
            if blob != digest and blob in leave_out:
                continue
            store.link_into(blob, self.blob_path(blob))
        return self._append(entry)

    def retag(self, digest: str, short_tag: str, ref_name: str) -> bool:
        """Channel alias (R-4): append a copy of the first descriptor with ``digest`` under new
        tags; False when (short tag, digest) is already recorded; LayoutError when absent."""
        validate_tag(short_tag)
        source = next((e for e in self.entries() if e.digest == digest), None)
        if source is None:
            raise LayoutError(
                f"cannot alias {short_tag} to {digest}: layout {self.path} has no "
                "descriptor with that digest"
            )
        return self._append(source.with_tags(short_tag, ref_name))

    def _append(self, entry: IndexEntry) -> bool:
        with self._lock, layout_lock(self.path):
            doc = self._read_doc()
            entries = parse_index(doc, str(self.index_path))
            if any(e.short_tag == entry.short_tag and e.digest == entry.digest for e in entries):
                return False
            self._write(doc, [*entries, entry])
            return True

    def sort(self) -> None:
        """Sort descriptors by ref name (stable), rewrite with 2-space indentation (R-7.5)."""
        with self._lock, layout_lock(self.path):
            doc = self._read_doc()
            entries = parse_index(doc, str(self.index_path))
            self._write(doc, sorted(entries, key=lambda e: e.ref_name or ""))

    # -- inspection -------------------------------------------------------------------------
    def _manifest_doc(self, digest: str) -> Mapping[str, Any]:
        try:
            doc = json.loads(self.read_blob(digest, limit=MAX_MANIFEST_BYTES))
        except ValueError as exc:
            raise LayoutError(f"manifest {digest} in {self.path} is not JSON: {exc}") from exc
        if not isinstance(doc, Mapping):
            raise LayoutError(f"manifest {digest} in {self.path} is not a JSON object")
        return doc

    def closure(self, digest: str) -> list[tuple[str, int]]:
        """Every blob reachable from manifest/index ``digest`` as (digest, size), parents first
        (pre-order: manifest, config, layers; an index, then each child's closure)."""
        out: dict[str, int] = {}
        try:
            root_size = self.blob_path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise LayoutError(f"layout {self.path} lacks manifest {digest}") from exc
        self._collect(digest, root_size, out)
        return list(out.items())

    def _collect(self, digest: str, size: int, out: dict[str, int]) -> None:
        if digest in out:
            return
        out[digest] = size
        doc = self._manifest_doc(digest)
        for child in parse_index(doc, f"index {digest} in {self.path}"):
            self._collect(child.digest, child.size, out)
        config = doc.get("config")
        referenced = [config] if config is not None else []
        referenced += list(doc.get("layers") or [])
        for item in referenced:
            descriptor = _plain_descriptor(item, f"manifest {digest} in {self.path}")
            out.setdefault(descriptor.digest, descriptor.size)

    def verify(self) -> list[str]:
        """Problems of this layout: entries without short tag, missing or corrupt blobs."""
        problems: list[str] = []
        checked: set[str] = set()
        for position, entry in enumerate(self.entries()):
            if not entry.short_tag:
                problems.append(
                    f"{self.path}: descriptor #{position} ({entry.digest}) has no "
                    f"{ANNOTATION_SHORT_TAG} annotation"
                )
            try:
                blobs = self.closure(entry.digest)
            except (LayoutError, IntegrityError) as exc:
                problems.append(str(exc))
                continue
            for blob, _ in blobs:
                if blob not in checked:
                    checked.add(blob)
                    problems += self._check_blob(blob)
        return problems

    def _check_blob(self, digest: str) -> list[str]:
        path = self.blob_path(digest)
        if not path.is_file():
            return [f"{self.path}: blob {digest} is missing"]
        actual = sha256_file_digest(path)
        if actual != digest:
            return [f"{self.path}: blob {digest} is corrupt (content hashes to {actual})"]
        return []


def _plain_descriptor(item: Any, where: str) -> IndexEntry:
    """A config/layer descriptor (mediaType may be absent in odd manifests)."""
    if isinstance(item, Mapping) and "mediaType" not in item:
        item = {**item, "mediaType": "application/octet-stream"}
    try:
        return IndexEntry.from_json(item)
    except LayoutError as exc:
        raise LayoutError(f"{where}: {exc}") from exc
