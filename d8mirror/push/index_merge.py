"""Push side of the unpack (R-7.5, R-8.4, Q2): merging index files and provenance.

Archives are unpacked in sorted order into one tree; each archive's ``index.json`` for a layout
path goes through :func:`merge_index_into`, which unions it with the one already there
(:func:`merge_index`) **and** records where each descriptor came from in a sidecar next to it,
``.d8mirror-provenance.json``::

    {"version": 1, "entries": [{"digest": "sha256:…", "refName": "…", "archives": ["…"]}]}

keyed by (digest, ref name) — the merge's dedupe key — with every archive that brought it. The
sidecar leaves ``index.json`` byte-compatible with the reference. For ``packages/<n>/version``
it also records, by content, which archives were versions catalogs and which entries the
package's own archive brought as a pin's channel aliases (:func:`pin_aliases`). At push time
``Provenance.load(dir).q2_preferred(entries)`` is the ``preferred`` predicate for
:func:`d8mirror.push.short_tags.resolve_short_tags`: when one short tag has several digests, a
pin's alias beats the catalog (the pin wins); any other conflict goes to the catalog's entry (an
unpinned package follows the catalog); otherwise the last in index order wins — and because the
merge puts an earlier archive's entries before a later one's (stable sort by ref name), that is
the later archive. (``from_item_archive``, the older name-based predicate, is kept for callers.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.errors import LayoutError
from d8mirror.layout import (
    INDEX_FILE,
    IndexEntry,
    layout_lock,
    parse_index,
    read_index_file,
    read_json,
    write_json_atomic,
)
from d8mirror.mediatypes import OCI_INDEX
from d8mirror.names import VERSIONS_ARCHIVE
from d8mirror.versions.channels import ALL_CHANNELS

PROVENANCE_FILE = ".d8mirror-provenance.json"
CHANNEL_NAMES = frozenset(ALL_CHANNELS)


def merge_index(existing: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """Union of two index documents (R-7.5): existing entries first, then new ones, deduped by
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
    (Q2, R-4): an entry tagged with a channel name that comes *after* an entry of
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
        doc = read_json(path, "provenance sidecar")
        try:
            items = doc["entries"]
            return cls(
                {(str(i["digest"]), i.get("refName")): list(i["archives"]) for i in items},
                {str(a) for a in doc.get("catalogs", [])},
                {
                    (str(i["digest"]), i.get("refName")): list(i["pinAliasIn"])
                    for i in items
                    if i.get("pinAliasIn")
                },
            )
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
        write_json_atomic(Path(layout_dir) / PROVENANCE_FILE, doc, mode=0o600)

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
    layout_dir.mkdir(parents=True, exist_ok=True)
    with layout_lock(layout_dir):
        if target.exists():
            doc = merge_index(read_index_file(target), incoming)
        else:
            doc = merge_index({}, incoming)
        write_json_atomic(target, doc, mode=0o600)
        provenance = Provenance.load(layout_dir)
        provenance.record(new_entries, source)
        provenance.save(layout_dir)
