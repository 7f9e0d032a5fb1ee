"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/sha256/``) and their index files.

A :class:`Layout` is one directory; every write of ``index.json`` is atomic (temp file, then
``os.replace``) and serialised by a per-path lock, so several threads (and several ``Layout``
objects for one path) may add images to one layout. ``index.json`` is re-read for every
operation: it is small, and the file is the only state (a crash loses nothing that was written).

Pull side (spec §6.2): :meth:`Layout.add_manifest` links the image's whole blob closure from the
shared :class:`~d8mirror.blobstore.BlobStore` and only then appends the descriptor, so a failed
write is really redone by the next attempt (PR #393). Channel aliases (§4) are
:meth:`Layout.retag` with :func:`alias_ref_name` (Part A Q3: host:port safe).

Push side (§7.5, §8.4, Part A Q2). Archives are unpacked in sorted order into one tree; each
archive's ``index.json`` for a layout path goes through :func:`merge_index_into`, which unions it
with the one already there (:func:`merge_index`) **and** records where each descriptor came from
in a sidecar next to it, ``.d8mirror-provenance.json``::

    {"version": 1, "entries": [{"digest": "sha256:…", "refName": "…", "archives": ["…"]}]}

keyed by (digest, ref name) — the merge's dedupe key — with every archive that brought it. The
sidecar leaves ``index.json`` byte-compatible with the reference. For ``packages/<n>/version``
it also records, by content, which archives were versions catalogs and which entries the
package's own archive brought as a pin's channel aliases (:func:`pin_aliases`). At push time
``Provenance.load(dir).q2_preferred(entries)`` is the ``preferred`` predicate for
:func:`resolve_short_tags`: when one short tag has several digests, a pin's alias beats the
catalog (the pin wins); any other conflict goes to the catalog's entry (an unpinned package
follows the catalog); otherwise the last in index order wins — and because the merge puts an
earlier archive's entries before a later one's (stable sort by ref name), that is the later
archive. (``from_item_archive``, the older name-based predicate, is kept for callers.)
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from d8mirror.names import VERSIONS_ARCHIVE
from d8mirror.reference import is_valid_digest, validate_digest, validate_tag
from d8mirror.versions.channels import ALL_CHANNELS

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
PROVENANCE_FILE = ".d8mirror-provenance.json"
CHANNEL_NAMES = frozenset(ALL_CHANNELS)
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
        annotations = {**self.annotations, ANNOTATION_SHORT_TAG: short_tag,
                       ANNOTATION_REF_NAME: ref_name}
        return IndexEntry(self.media_type, self.digest, self.size, annotations, dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size,
                               "digest": self.digest}
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
            raise LayoutError(f"index descriptor has an invalid digest {digest!r:.100}: "
                              "only sha256:<64 lowercase hex> is accepted")
        if not isinstance(media_type, str) or not media_type:
            raise LayoutError(f"index descriptor {digest} has no mediaType")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise LayoutError(f"index descriptor {digest} has an invalid size {size!r:.50}")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise LayoutError(f"index descriptor {digest} has non-string annotations")
        extra = {k: v for k, v in obj.items() if k not in _DESCRIPTOR_KEYS}
        return cls(media_type, digest, size, dict(annotations), extra)


def alias_ref_name(ref_name: str, tag: str) -> str:
    """``ref_name`` with its tag replaced by ``tag`` (Part A Q3: the tag is cut after the last
    ``/``, so ``host:port`` survives); a digest (``@sha256:…``) is dropped."""
    base = ref_name.split("@", 1)[0]
    colon = base.rfind(":")
    if colon > base.rfind("/"):
        base = base[:colon]
    return f"{base}:{tag}"


# -- files ---------------------------------------------------------------------------------------
def _write_json_atomic(path: Path, doc: Any, *, mode: int = FILE_MODE) -> None:
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), mode=mode)


def _read_json(path: Path, what: str) -> Any:
    try:
        data = read_capped(path, limit=_MAX_INDEX_BYTES, what=what)
        return json.loads(data)
    except FileNotFoundError as exc:
        raise LayoutError(f"{what} {path} is missing: not an OCI image layout") from exc
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{what} {path} is unreadable or not JSON ({exc}): "
                          "re-create the layout or re-extract the archive") from exc


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
    doc = _read_json(path, "index")
    parse_index(doc, str(path))
    return dict(doc)


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path.resolve(), threading.Lock())


# -- layouts -------------------------------------------------------------------------------------
class Layout:
    """An OCI image layout directory; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = _path_lock(self.path)

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
        _write_json_atomic(path / OCI_LAYOUT_FILE, {"imageLayoutVersion": OCI_LAYOUT_VERSION})
        _write_json_atomic(path / INDEX_FILE, _empty_index())
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
        marker = _read_json(path / OCI_LAYOUT_FILE, "layout marker")
        if not isinstance(marker, Mapping) or "imageLayoutVersion" not in marker:
            raise LayoutError(f"{path / OCI_LAYOUT_FILE} has no imageLayoutVersion: "
                              "not an OCI image layout")
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
        _write_json_atomic(self.index_path, doc)

    def entries(self) -> list[IndexEntry]:
        return parse_index(self._read_doc(), str(self.index_path))

    def has_images(self) -> bool:
        return bool(self.entries())

    def find(self, short_tag: str) -> IndexEntry | None:
        """The last descriptor with ``short_tag`` (the one push would use)."""
        found = [e for e in self.entries() if e.short_tag == short_tag]
        return found[-1] if found else None

    def missing(self, planned_short_tags: Iterable[str]) -> list[str]:
        """Planned short tags with no descriptor in this layout (spec §6.4), sorted."""
        present = {e.short_tag for e in self.entries()}
        return sorted(set(planned_short_tags) - present)

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where ``digest`` lives; anything but ``sha256:<64 hex>`` is refused (LayoutError)."""
        if not is_valid_digest(digest):
            raise LayoutError(f"refusing blob digest {digest!r:.100} in layout {self.path}: "
                              "only sha256:<64 lowercase hex> is accepted")
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        path = self.blob_path(digest)
        try:
            return read_capped(path, limit=limit, what=f"blob {digest}")
        except FileNotFoundError as exc:
            raise LayoutError(f"layout {self.path} lacks blob {digest}: the layout is "
                              "incomplete; pull it again") from exc

    # -- writes -----------------------------------------------------------------------------
    def add_manifest(self, *, digest: str, media_type: str, size: int, short_tag: str,
                     ref_name: str, blobs: Iterable[str], store: BlobStore) -> bool:
        """Link the image's blob closure from ``store``, then record it under ``short_tag``.

        Idempotent per (short tag, digest): returns False when that pair is already recorded.
        The blobs are (re)linked first either way, so a descriptor never points at nothing.
        """
        entry = IndexEntry(media_type, validate_digest(digest), size,
                           {ANNOTATION_SHORT_TAG: validate_tag(short_tag),
                            ANNOTATION_REF_NAME: ref_name})
        for blob in dict.fromkeys([digest, *blobs]):
            store.link_into(blob, self.blob_path(blob))
        return self._append(entry)

    def retag(self, digest: str, short_tag: str, ref_name: str) -> bool:
        """Channel alias (§4): append a copy of the first descriptor with ``digest`` under new
        tags; False when (short tag, digest) is already recorded; LayoutError when absent."""
        validate_tag(short_tag)
        source = next((e for e in self.entries() if e.digest == digest), None)
        if source is None:
            raise LayoutError(f"cannot alias {short_tag} to {digest}: layout {self.path} has no "
                              "descriptor with that digest")
        return self._append(source.with_tags(short_tag, ref_name))

    def _append(self, entry: IndexEntry) -> bool:
        with self._lock:
            doc = self._read_doc()
            entries = parse_index(doc, str(self.index_path))
            if any(e.short_tag == entry.short_tag and e.digest == entry.digest for e in entries):
                return False
            self._write(doc, [*entries, entry])
            return True

    def sort(self) -> None:
        """Sort descriptors by ref name (stable), rewrite with 2-space indentation (§7.5)."""
        with self._lock:
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
                problems.append(f"{self.path}: descriptor #{position} ({entry.digest}) has no "
                                f"{ANNOTATION_SHORT_TAG} annotation")
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


# -- merge (push side) ---------------------------------------------------------------------------
def merge_index(existing: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Union of two index documents (§7.5): existing entries first, then new ones, deduped by
    (digest, ref name), stably sorted by ref name; schemaVersion/mediaType fall back to the
    incoming file's. Same short tag with different digests: both kept. LayoutError if invalid."""
    old = parse_index(existing, "existing index.json")
    new = parse_index(incoming, "incoming index.json")
    merged: dict[tuple[str, str | None], IndexEntry] = {}
    for entry in [*old, *new]:
        merged.setdefault(entry.key, entry)
    doc = {k: v for k, v in existing.items() if k != "manifests"}
    for key in ("schemaVersion", "mediaType"):
        if key not in doc and key in incoming:
            doc[key] = incoming[key]
    doc.setdefault("schemaVersion", 2)
    doc.setdefault("mediaType", OCI_INDEX)
    ordered = sorted(merged.values(), key=lambda e: e.ref_name or "")
    doc["manifests"] = [e.to_json() for e in ordered]
    return doc


def pin_aliases(entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    """The channel aliases of a pin in one ``version/index.json`` as an archive brought it
    (Part A Q2, spec §4): an entry tagged with a channel name that comes *after* an entry of
    the same digest tagged with something else. Both the reference and d8mirror append a pin's
    aliases to the sorted index (copies of the pinned version's descriptor); a pulled channel
    image sorts before its ``v``-prefixed versions and so is never such a copy."""
    seen_versions: set[str] = set()
    out: list[IndexEntry] = []
    for entry in entries:
        if entry.short_tag in CHANNEL_NAMES:
            if entry.digest in seen_versions:
                out.append(entry)
        elif entry.short_tag:
            seen_versions.add(entry.digest)
    return out


@dataclass
class Provenance:
    """Which archives brought each (digest, ref name) of one layout; see the module docstring.
    For a ``packages/<n>/version`` layout also (Q2): which archives brought it as a versions
    catalog (``catalogs``), and which entries a package's own archive brought as a pin's
    channel aliases (``pins``)."""

    sources: dict[tuple[str, str | None], list[str]] = field(default_factory=dict)
    catalogs: set[str] = field(default_factory=set)
    pins: dict[tuple[str, str | None], list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, layout_dir: Path) -> Provenance:
        path = Path(layout_dir) / PROVENANCE_FILE
        if not path.exists():
            return cls()
        doc = _read_json(path, "provenance sidecar")
        try:
            items = doc["entries"]
            return cls({(str(i["digest"]), i.get("refName")): list(i["archives"]) for i in items},
                       {str(a) for a in doc.get("catalogs", [])},
                       {(str(i["digest"]), i.get("refName")): list(i["pinAliasIn"])
                        for i in items if i.get("pinAliasIn")})
        except (KeyError, TypeError, AttributeError) as exc:
            raise LayoutError(f"provenance sidecar {path} is malformed: {exc}") from exc

    def save(self, layout_dir: Path) -> None:
        items = sorted(self.sources.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        entries: list[dict[str, Any]] = []
        for key, archives in items:
            entry: dict[str, Any] = {"digest": key[0], "refName": key[1], "archives": archives}
            if self.pins.get(key):
                entry["pinAliasIn"] = self.pins[key]
            entries.append(entry)
        doc: dict[str, Any] = {"version": 1, "entries": entries}
        if self.catalogs:
            doc["catalogs"] = sorted(self.catalogs)
        _write_json_atomic(Path(layout_dir) / PROVENANCE_FILE, doc, mode=0o600)

    def record_role(self, entries: Sequence[IndexEntry], source: str, *, own: bool) -> None:
        """Q2: ``source`` brought this version layout as the package's own archive (``own``:
        its pin aliases are recorded) or as a versions catalog."""
        if not own:
            self.catalogs.add(source)
            return
        for entry in pin_aliases(entries):
            archives = self.pins.setdefault(entry.key, [])
            if source not in archives:
                archives.append(source)

    def q2_preferred(self, entries: Sequence[IndexEntry]) -> Callable[[IndexEntry], bool]:
        """The Q2 ``preferred`` predicate for :func:`resolve_short_tags`: on a tag that a
        package's own archive pins (a channel alias of its pin), the pin's entry; on any other
        conflict, an entry the versions catalog brought (an unpinned package follows the
        catalog, never an older package archive); without either, the last entry wins."""
        pinned = {e.short_tag for e in entries if self.pins.get(e.key)}

        def preferred(entry: IndexEntry) -> bool:
            if entry.short_tag in pinned:
                return bool(self.pins.get(entry.key))
            return any(a in self.catalogs for a in self.archives(entry))
        return preferred

    def is_pin_alias(self, entry: IndexEntry) -> bool:
        return bool(self.pins.get(entry.key))

    def record(self, entries: Iterable[IndexEntry], source: str) -> None:
        for entry in entries:
            archives = self.sources.setdefault(entry.key, [])
            if source not in archives:
                archives.append(source)

    def archives(self, entry: IndexEntry) -> list[str]:
        return list(self.sources.get(entry.key, []))

    def from_item_archive(self, entry: IndexEntry) -> bool:
        """True when ``entry`` came from an archive other than ``package-versions.tar``
        (e.g. ``package-<name>.tar``): the Q2 ``preferred`` predicate."""
        return any(Path(a).name != VERSIONS_ARCHIVE for a in self.archives(entry))


def merge_index_into(layout_dir: Path, incoming: Mapping[str, Any], *, source: str) -> None:
    """Push-side unpack: merge ``incoming`` into ``layout_dir/index.json`` (written if absent,
    mode 0600) and record that its descriptors came from archive ``source``."""
    layout_dir = Path(layout_dir)
    target = layout_dir / INDEX_FILE
    new_entries = parse_index(incoming, f"index.json for {layout_dir} from {source}")
    with _path_lock(layout_dir):
        if target.exists():
            doc = merge_index(read_index_file(target), incoming)
        else:
            doc = merge_index({}, incoming)
        layout_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(target, doc, mode=0o600)
        provenance = Provenance.load(layout_dir)
        provenance.record(new_entries, source)
        provenance.save(layout_dir)


# -- push: which descriptor a short tag means ----------------------------------------------------
@dataclass(frozen=True)
class TagConflict:
    """One short tag given several digests; ``chosen`` is the digest that will be pushed."""

    short_tag: str
    digests: tuple[str, ...]
    chosen: str
    by_preference: bool

    def describe(self) -> str:
        others = ", ".join(d for d in self.digests if d != self.chosen)
        why = "it came from the package's own archive" if self.by_preference else "last wins"
        return (f"tag {self.short_tag} has {len(self.digests)} digests; pushing {self.chosen} "
                f"({why}), ignoring {others}")


class ShortTagResolution(Mapping[str, IndexEntry]):
    """short tag → descriptor to push (sorted by tag), plus ``conflicts`` and ``untagged``."""

    def __init__(self, chosen: Mapping[str, IndexEntry], conflicts: Sequence[TagConflict],
                 untagged: Sequence[IndexEntry]) -> None:
        self._chosen = dict(sorted(chosen.items()))
        self.conflicts: tuple[TagConflict, ...] = tuple(conflicts)
        self.untagged: tuple[IndexEntry, ...] = tuple(untagged)

    def __getitem__(self, key: str) -> IndexEntry:
        return self._chosen[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._chosen)

    def __len__(self) -> int:
        return len(self._chosen)


def resolve_short_tags(entries: Sequence[IndexEntry],
                       preferred: Callable[[IndexEntry], bool] | None = None,
                       ) -> ShortTagResolution:
    """Which descriptor each short tag pushes (§8.4 + Part A Q2).

    Default: the last in index order. When a short tag has several digests and ``preferred``
    marks some of its descriptors, the last preferred one wins. Entries without a short tag are
    skipped and listed in ``untagged``; every tag with several digests is one conflict.
    """
    groups: dict[str, list[IndexEntry]] = {}
    untagged: list[IndexEntry] = []
    for entry in entries:
        if entry.short_tag:
            groups.setdefault(entry.short_tag, []).append(entry)
        else:
            untagged.append(entry)
    chosen: dict[str, IndexEntry] = {}
    conflicts: list[TagConflict] = []
    for tag in sorted(groups):
        group = groups[tag]
        winner, by_preference = group[-1], False
        digests = tuple(dict.fromkeys(e.digest for e in group))
        if len(digests) > 1 and preferred is not None:
            favourites = [e for e in group if preferred(e)]
            if favourites and favourites[-1].digest != winner.digest:
                winner, by_preference = favourites[-1], True
        chosen[tag] = winner
        if len(digests) > 1:
            conflicts.append(TagConflict(tag, digests, winner.digest, by_preference))
    return ShortTagResolution(chosen, conflicts, untagged)
