"""Unpack bundle archives into one unified tree (R-8.2, R-7.5, Q2, Q16, Q23).

Archives are unpacked in the order given (sorted by the caller, R-8.1) with
:func:`d8mirror.bundle.safe_unpack` straight into ``<tmp>/push/unified``. When an archive
brings an ``index.json`` for a layout that already has one, the two are merged
(:func:`d8mirror.push.index_merge.merge_index_into`); every ``index.json`` an archive brings is
recorded in the layout's provenance sidecar, with (for ``packages/<n>/version``) whether the
archive is the package's own (it also brings ``packages/<n>/index.json``; its pin aliases are
recorded) or a versions catalog, so the pusher can let a pin beat the catalog and the catalog
beat an unpinned package's archive (Q2,
:meth:`d8mirror.push.index_merge.Provenance.q2_preferred`). Blobs are content-addressed: an
existing one is replaced by identical bytes.

Large blobs of plain tar archives are not written at all (:func:`d8mirror.bundle.safe_unpack`
with ``blob_spans``): where their bytes sit in the archive is saved in
``<unified>/.d8mirror-blob-spans.json`` (:data:`SPANS_FILE`, keyed by tree path), and the pusher
uploads them from there. Chunk sets and compressed tars are extracted whole.

Push runs :mod:`d8mirror.push.validate` first and refuses a bundle that fails it, so here an
archive that cannot be read (changed since) is only a warning (``Failed to unpack <name>:
<err>``); an *unsafe* archive (tar-slip, links, devices, sparse files) and a full disk are
errors. Bundle bytes written to disk: manifests, configs, small blobs and every byte of a chunk
set, once (tar → file); large blobs of plain tars never. ``bytes_written`` is what
the tree really holds, ``bytes_in_archives`` what was left in the archives.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.blobstore import read_capped
from d8mirror.bundle import BlobSpans, safe_unpack
from d8mirror.errors import (
    BundleError,
    DiskSpaceError,
    IntegrityError,
    LayoutError,
    MirrorError,
    UnsafeArchiveEntryError,
)
from d8mirror.files import write_text_atomic
from d8mirror.layout import INDEX_FILE, IndexEntry, parse_index, read_index_file
from d8mirror.names import PACKAGES, VERSION
from d8mirror.push.index_merge import Provenance, merge_index_into
from d8mirror.push.validate import MAX_INDEX_BYTES

log = logging.getLogger("d8mirror.push")

UNIFIED_DIR = Path("push") / "unified"
#: Blobs left in their archive, in the unified root: tree path → (archive, offset, size).
SPANS_FILE = ".d8mirror-blob-spans.json"


class UnpackResult(BaseModel):
    """What unpacking did: the tree, archives unpacked, archives that failed (with why)."""

    model_config = ConfigDict(frozen=True)

    root: Path = Field(description="The unified tree.")
    unpacked: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = Field((), description="(archive, why) pairs.")
    bytes_written: int = Field(0, description="Bytes the tree holds.")
    warnings: tuple[str, ...] = ()
    bytes_in_archives: int = Field(0, description="Bytes of blobs left in their archives.")


def unpack_all(
    archives: Sequence[Path], root: Path, *, warn: Callable[[str], None] | None = None
) -> UnpackResult:
    """Unpack ``archives`` in the given order into ``root`` (created if missing); the blob
    spans (those of an earlier unpack into ``root`` included) are saved in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    spans = load_spans(root)
    unpacked: list[str] = []
    failed: list[tuple[str, str]] = []
    warnings: list[str] = []
    for archive in archives:
        try:
            unpack_one(archive, root, spans)
        except (UnsafeArchiveEntryError, DiskSpaceError):
            raise
        except (MirrorError, OSError, ValueError) as exc:
            message = f"Failed to unpack {archive.name}: {exc}"
            (warn or log.warning)(message)
            warnings.append(message)
            failed.append((archive.name, str(exc)))
            continue
        unpacked.append(archive.name)
    save_spans(root, spans)
    return UnpackResult(
        root=root,
        unpacked=tuple(unpacked),
        failed=tuple(failed),
        bytes_written=tree_size(root),
        warnings=tuple(warnings),
        bytes_in_archives=spans.total_size,
    )


def unpack_one(archive: Path, root: Path, spans: BlobSpans | None = None) -> list[str]:
    """Unpack one archive into ``root``, merging index files and recording provenance; with
    ``spans``, large blobs of a plain tar are recorded there instead of written."""
    source = archive.name
    merged: set[Path] = set()
    brought: dict[Path, list[IndexEntry]] = {}  # layout dir → its entries, in archive order

    def on_collision(existing: Path, incoming: Path) -> None:
        try:
            doc = _read_incoming(incoming, source)
            merge_index_into(existing.parent, doc, source=source)
            merged.add(existing.resolve())
            brought[existing.parent] = parse_index(doc, str(incoming))
        finally:
            incoming.unlink(missing_ok=True)

    names = safe_unpack(archive, root, on_index_collision=on_collision, blob_spans=spans)
    for name in names:
        path = root / name
        if path.name == INDEX_FILE and path.resolve() not in merged:
            provenance = Provenance.load(path.parent)
            entries = parse_index(read_index_file(path), str(path))
            provenance.record(entries, source)
            provenance.save(path.parent)
            brought[path.parent] = entries
    _record_q2_roles(root, set(names), brought, source)
    return names


def _record_q2_roles(
    root: Path, names: set[str], brought: dict[Path, list[IndexEntry]], source: str
) -> None:
    """Q2, by content: an archive that brings ``packages/<n>/version/index.json``
    together with ``packages/<n>/index.json`` is package <n>'s own archive (its pin aliases are
    recorded), one that brings it without is a versions catalog."""
    for layout_dir, entries in brought.items():
        rel = layout_dir.relative_to(root).parts
        if len(rel) != 3 or rel[0] != PACKAGES or rel[2] != VERSION:
            continue
        own = f"{PACKAGES}/{rel[1]}/{INDEX_FILE}" in names
        provenance = Provenance.load(layout_dir)
        provenance.record_role(entries, source, own=own)
        provenance.save(layout_dir)


def _read_incoming(path: Path, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(read_capped(path, limit=MAX_INDEX_BYTES, what=f"index.json from {source}"))
    except IntegrityError as exc:
        raise LayoutError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise LayoutError(f"index.json from {source} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise LayoutError(f"index.json from {source} is not a JSON object")
    return doc


def spans_path(root: Path) -> Path:
    return root / SPANS_FILE


def save_spans(root: Path, spans: BlobSpans) -> None:
    """Write ``<root>/.d8mirror-blob-spans.json`` (an empty map too: every tree has one)."""
    write_text_atomic(spans_path(root), json.dumps(spans.to_json(), indent=1))


def load_spans(root: Path) -> BlobSpans:
    """The spans saved in ``root``; none when the file is missing."""
    return read_spans_file(spans_path(root))


def read_spans_file(path: Path) -> BlobSpans:
    """The spans saved in ``path``; none when the file is missing."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return BlobSpans()
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the blob spans {path}: {exc}; unpack again") from exc
    return BlobSpans.from_json(doc)


def tree_size(root: Path) -> int:
    """Bytes in regular files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class WorkDir:
    """``<tmp>/push/unified`` and the directories this run created for it (Q23: only those
    are removed at the end, never a user's ``--tmp-dir`` itself)."""

    tmp: Path
    created: list[Path] = field(default_factory=list)

    @property
    def unified(self) -> Path:
        return self.tmp / UNIFIED_DIR

    def prepare(self) -> Path:
        """Create the unified dir (a stale one left by a killed run is ours: wiped first).
        BundleError when a directory push owns there (``push/unified``, and everything from a
        ``.tmp`` component down) is a symlink: the wipe would delete what it points to."""
        self._refuse_symlinks()
        shutil.rmtree(self.unified, ignore_errors=True)
        missing = [p for p in [self.unified, *self.unified.parents] if not p.exists()]
        try:
            for path in reversed(missing):
                path.mkdir()
                self.created.append(path)
        except OSError as exc:
            raise BundleError(
                f"cannot create push's working directory {path} ({exc.strerror or exc}): the "
                "bundle directory is read-only or not writable; pass --tmp-dir on a writable "
                "disk"
            ) from exc
        return self.unified

    def _refuse_symlinks(self) -> None:
        parts = self.tmp.parts
        tops = [i for i, part in enumerate(parts) if part == ".tmp"]
        owned = [self.unified, self.unified.parent]
        if tops:
            owned += [Path(*parts[: i + 1]) for i in range(tops[-1], len(parts))]
        for path in owned:
            if path.is_symlink():
                raise BundleError(
                    f"{path} is a symlink: refusing to use it as push's working "
                    "directory (push deletes what it creates there); remove it "
                    "or pass --tmp-dir"
                )

    def cleanup(self) -> None:
        shutil.rmtree(self.unified, ignore_errors=True)
        for path in reversed(self.created):
            if path.exists() and not any(path.iterdir()):
                path.rmdir()


def default_tmp_dir(bundle_dir: Path | None, archives: Sequence[Path]) -> Path:
    """``<bundle>/.tmp/mirror``, else ``<dir of the first archive>/.tmp/mirror`` (R-8.2)."""
    base = (
        bundle_dir
        if bundle_dir is not None and bundle_dir.is_dir()
        else (archives[0].parent if archives else Path.cwd())
    )
    return base / ".tmp" / "mirror"
