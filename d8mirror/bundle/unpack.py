"""Safe unpack of bundle archives (R-8.2; Q16).

Only regular files are extracted; directory entries are ignored. Absolute paths, ``..``
components, symlinks, hardlinks, devices, fifos and sparse files are refused with
:class:`~d8mirror.errors.UnsafeArchiveEntryError` naming the archive and the entry — nothing is
ever written outside the destination. Each file is written under a temporary name and renamed.
An incoming ``index.json`` that meets an existing one is handed to the caller to merge.

Blobs left in the archive (``blob_spans``): for a plain, uncompressed tar file, a regular-file
entry ``…/blobs/sha256/<64 lowercase hex>`` larger than :data:`SPAN_THRESHOLD` (1 MiB) is not
written: its place in the archive (:class:`BlobSpan`: archive, data offset, size) is recorded
under its tree path instead, and push uploads those bytes straight from the archive. Blobs up to
1 MiB (manifests, configs, small layers) are extracted: cheap, and the tree stays a readable
layout for them; the large layers, nearly all the bytes, are never copied. (A manifest above
1 MiB, rare, is read from its span by push.) A chunk set (an entry may span chunks) or a
tar without a ustar/GNU header is extracted whole as before. Compressed archives and sparse
entries are refused: bytes written never exceed the archive's size. Entry paths
pass the same safety checks either way; a later entry for the same path replaces an earlier
one, file or span alike.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from d8mirror.errors import BundleError, MirrorError, UnsafeArchiveEntryError
from d8mirror.files import os_error, remove_if_exists

from .checksums import PIECE
from .chunks import open_archive

INDEX_FILE = "index.json"
IndexCollision = Callable[[Path, Path], None]

#: Blob entries above this size stay in a plain tar archive (see the module docstring).
SPAN_THRESHOLD = 1 << 20
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
_CONTIGUOUS_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_USTAR_MAGIC = slice(257, 262)

_REFUSED_TYPES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


def safe_entry_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The relative path of a regular-file entry, or :class:`UnsafeArchiveEntryError`."""
    name = member.name
    refused = _REFUSED_TYPES.get(member.type)
    if refused is None and not member.isreg():
        refused = f"an unsupported entry type {member.type!r}"
    if refused is None and member.issparse():
        refused = "a sparse file (it would expand beyond the archive)"
    if refused is not None:
        raise _unsafe(archive, name, f"it is {refused}; bundles hold regular files only")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(archive, name, "it is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "it contains a '..' component")
    if not parts or "\\" in name or "\x00" in name:
        raise _unsafe(archive, name, "it is not a valid relative file name")
    return PurePosixPath(*parts)


def _unsafe(archive: Path, entry: str, reason: str) -> UnsafeArchiveEntryError:
    return UnsafeArchiveEntryError(
        f"refusing to unpack {archive}: entry {entry!r} is unsafe ({reason}); the archive was "
        "not made by d8 or d8mirror, or it was tampered with — do not use it"
    )


@dataclass(frozen=True)
class BlobSpan:
    """Where a blob's bytes sit in a plain tar file: ``size`` bytes from ``offset``."""

    archive: Path
    offset: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "offset": self.offset, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any) -> BlobSpan:
        if not isinstance(doc, dict):
            raise BundleError(f"malformed blob span {doc!r:.100}")
        archive, offset, size = doc.get("archive"), doc.get("offset"), doc.get("size")
        if (
            not isinstance(archive, str)
            or not isinstance(offset, int)
            or not isinstance(size, int)
            or offset < 0
            or size < 0
        ):
            raise BundleError(f"malformed blob span {doc!r:.100}")
        return cls(Path(archive), offset, size)


class BlobSpans:
    """Blob entries left in their archive, by the path they would have in the tree
    (``<layout>/blobs/sha256/<hex>``, ``/``-separated, relative to the destination)."""

    def __init__(self, spans: Mapping[str, BlobSpan] | None = None) -> None:
        self._spans: dict[str, BlobSpan] = dict(spans or {})

    def __len__(self) -> int:
        return len(self._spans)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._spans))

    def items(self) -> Iterator[tuple[str, BlobSpan]]:
        """(tree path, span) pairs, by path."""
        return ((path, self._spans[path]) for path in sorted(self._spans))

    def find(self, layout: str, digest: str) -> BlobSpan | None:
        """The span of ``digest`` in the layout at tree path ``layout`` (``""`` = the root)."""
        return self._spans.get(
            PurePosixPath(layout, "blobs", "sha256", digest.partition(":")[2]).as_posix()
        )

    def record(self, path: str, span: BlobSpan) -> None:
        self._spans[path] = span

    def discard(self, path: str) -> None:
        self._spans.pop(path, None)

    @property
    def total_size(self) -> int:
        """Bytes left in archives (each tree path once)."""
        return sum(span.size for span in self._spans.values())

    def to_json(self) -> dict[str, Any]:
        return {path: self._spans[path].to_json() for path in sorted(self._spans)}

    @classmethod
    def from_json(cls, doc: Any) -> BlobSpans:
        if not isinstance(doc, dict):
            raise BundleError("malformed blob spans: not a JSON object")
        return cls({str(path): BlobSpan.from_json(span) for path, span in doc.items()})


def safe_unpack(
    archive: Path,
    dest: Path,
    *,
    on_index_collision: IndexCollision,
    blob_spans: BlobSpans | None = None,
) -> list[str]:
    """Extract the regular files of ``archive`` (plain tar or chunk set) under ``dest``.

    With ``blob_spans`` and a plain tar file, large blob entries are recorded there instead of
    written (module docstring). Returns the entry names (normalised relative paths) placed in
    the tree, extracted or recorded, in archive order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    recording = blob_spans if blob_spans is not None and is_plain_tar(archive) else None
    archive_size = archive.stat().st_size if recording is not None else 0
    placed: list[str] = []
    with open_archive(archive) as stream:
        try:
            # A plain tar file is read with seeks: entries left in it are skipped, not read.
            # Uncompressed only ("r|", not "r|*"): a compressed archive could expand without
            # bound, so it is refused as unreadable.
            with (
                tarfile.open(fileobj=stream, mode="r|")
                if recording is None
                else tarfile.open(fileobj=stream, mode="r:")
            ) as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    relative = safe_entry_path(archive, member)
                    if recording is not None and _stays_in_archive(member, relative):
                        _record_span(archive, archive_size, root, relative, member, recording)
                    else:
                        _extract(archive, root, relative, tar, member, on_index_collision)
                        if blob_spans is not None:  # a chunk set's entry replaces a span too
                            blob_spans.discard(relative.as_posix())
                    placed.append(relative.as_posix())
        except tarfile.TarError as exc:
            raise BundleError(
                f"cannot read {archive}: {exc}; the archive is truncated or corrupt, copy it again"
            ) from exc
    return placed


def is_plain_tar(archive: Path) -> bool:
    """``archive`` is one regular file starting with an uncompressed ustar/GNU header."""
    try:
        if not archive.is_file():
            return False
        with archive.open("rb") as stream:
            head = stream.read(tarfile.BLOCKSIZE)
    except OSError:
        return False
    return head[_USTAR_MAGIC] == b"ustar"


def _stays_in_archive(member: tarfile.TarInfo, relative: PurePosixPath) -> bool:
    parts = relative.parts
    return (
        member.type in _CONTIGUOUS_TYPES
        and member.sparse is None
        and member.size > SPAN_THRESHOLD
        and len(parts) >= 3
        and parts[-3:-1] == ("blobs", "sha256")
        and _BLOB_NAME.fullmatch(parts[-1]) is not None
    )


def _record_span(
    archive: Path,
    archive_size: int,
    root: Path,
    relative: PurePosixPath,
    member: tarfile.TarInfo,
    spans: BlobSpans,
) -> None:
    if member.offset_data + member.size > archive_size:
        raise tarfile.ReadError("unexpected end of data")  # as extracting it would
    try:
        target = _target(archive, root, relative)
        remove_if_exists(target)  # the last entry for a path wins, as when extracting
    except MirrorError:
        raise
    except OSError as exc:
        raise os_error(exc, root / relative, "unpack into") from exc
    spans.record(relative.as_posix(), BlobSpan(archive.resolve(), member.offset_data, member.size))


def _extract(
    archive: Path,
    root: Path,
    relative: PurePosixPath,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    on_index_collision: IndexCollision,
) -> None:
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - regular files always have data
        raise _unsafe(archive, member.name, "it has no data")
    _place(archive, root, relative, source, on_index_collision)


def _target(archive: Path, root: Path, relative: PurePosixPath) -> Path:
    target = root.joinpath(*relative.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root):
        raise _unsafe(
            archive,
            relative.as_posix(),
            "its directory resolves outside the destination through a symlink",
        )
    return target


def _place(
    archive: Path,
    root: Path,
    relative: PurePosixPath,
    source: IO[bytes],
    on_index_collision: IndexCollision,
) -> None:
    try:
        target = _target(archive, root, relative)
        temp = _write_temp(target, source)
    except MirrorError:
        raise
    except OSError as exc:
        raise os_error(exc, root / relative, "unpack into") from exc
    try:
        if target.name == INDEX_FILE and target.exists():
            on_index_collision(target, temp)
        else:
            os.replace(temp, target)
    except OSError as exc:
        raise os_error(exc, target, "unpack into") from exc
    finally:
        remove_if_exists(temp)


def _write_temp(target: Path, source: IO[bytes]) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, PIECE)
        temp.chmod(0o644)
    except BaseException:
        remove_if_exists(temp)
        raise
    return temp
