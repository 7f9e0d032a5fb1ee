"""What push accepts: every archive read to its real end and every layout it brings checked,
before anything is uploaded. ``d8mirror verify`` runs the same checks (:func:`check_archives`,
``deep=True`` also hashes every blob), so it never says OK to a bundle push refuses.

Per archive (a plain tar, or its chunk set read as one byte stream):

* the archive and each of its chunks is a regular file, not a symlink; chunks are numbered
  ``.0000`` on without a gap; a plain tar and a chunk set of the same name are not both present;
* it is a plain (uncompressed) ustar/GNU/PAX tar: a compressed one is refused;
* every entry is a directory or a regular file with a safe relative path
  (:func:`d8mirror.bundle.unpack.safe_entry_path`: no links, devices, fifos, ``..``, absolute
  paths) and not sparse; at most :data:`MAX_ARCHIVE_ENTRIES` entries;
* the archive ends with its end-of-archive marker (two zero blocks) and nothing but zeros
  follows: Python's ``tarfile`` takes a damaged header for the end of the archive, and a
  missing last chunk cuts the marker off, so both are found here;
* every ``index.json`` is at most :data:`MAX_INDEX_BYTES` and a valid index whose short tags
  are valid tags.

Over the tree the archives make together (later archives win, as in the unpack): every layout
path is a valid repository name; every manifest an ``index.json`` refers to (and every child
of an image index) is present, at most 4 MiB, hashes to its digest and has the descriptor's
size; every config and layer it refers to is present (:meth:`TreeCheck.blob_present`) or, in a
delta bundle, omitted by its ``delta.json`` (``omitted``: digest → size; the push then checks the
target holds it, :mod:`d8mirror.push.delta_base`). A blob that is neither stays a problem.

Only headers, ``index.json`` files and manifests are read (by seeking), so a 2 GB bundle is
checked in well under a second; ``deep`` reads and hashes every blob too.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, cast

from d8mirror.bundle.checksums import check_archive_sidecars
from d8mirror.bundle.chunks import existing_chunks
from d8mirror.bundle.unpack import safe_entry_path
from d8mirror.errors import BundleError, LayoutError, MirrorError
from d8mirror.hashing import as_digest, sha256_bytes_digest, sha256_bytes_hex, sha256_stream_hex
from d8mirror.layout import IndexEntry, parse_index
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG, INDEX_TYPES, MAX_MANIFEST_BYTES
from d8mirror.names import chunk_name
from d8mirror.reference import is_valid_repository, is_valid_tag

#: An ``index.json`` larger than this is refused (a real one is a few hundred KiB).
MAX_INDEX_BYTES = 16 << 20
#: All the ``index.json`` files of a bundle together (their descriptors are held in memory).
MAX_TOTAL_INDEX_BYTES = 128 << 20
#: Entries (files and directories) one archive may hold; more is refused.
MAX_ARCHIVE_ENTRIES = 50_000
#: Problems listed in a refusal (all are counted).
SHOWN_PROBLEMS = 20

_BLOB = re.compile(r"[0-9a-f]{64}")
_PIECE = 1 << 20
_MAX_DEPTH = 4
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
RepositoryOf = Callable[[str], object]


@dataclass
class BundleCheck:
    """What the checks saw and every problem found (empty ``problems`` = push may go on)."""

    archives: int = 0
    files: int = 0  # archive files and chunks
    entries: int = 0
    blobs_hashed: int = 0  # with ``deep``
    descriptors: int = 0
    manifests: int = 0
    problems: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)  # descriptors push skips (warned)
    #: Omitted blobs (delta bundle) the layouts need and the tree lacks: digest → layout paths.
    omitted_needed: dict[str, set[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Location:
    archive: int  # index into the archives
    offset: int  # of the data in the archive's byte stream
    size: int


# -- the files of one archive ----------------------------------------------------------------
def archive_files(archive: Path) -> list[Path]:
    """The files that make up ``archive`` in order: itself, else its chunks; BundleError when
    one is a symlink or not a regular file, chunks have gaps, or both forms are present."""
    chunks = existing_chunks(archive)
    if os.path.lexists(archive):
        if chunks:
            raise BundleError(
                f"{archive}: both the tar and its chunks ({chunks[0].name}, …) "
                "are present; keep one of them"
            )
        files = [archive]
    elif not chunks:
        raise BundleError(
            f"{archive}: missing (neither the tar nor its first chunk "
            f"{chunk_name(archive.name, 0)} exists)"
        )
    else:
        files = chunks
        for position, chunk in enumerate(chunks):
            expected = archive.with_name(chunk_name(archive.name, position))
            if chunk != expected:
                raise BundleError(
                    f"{archive}: chunk {expected.name} is missing (the next one "
                    f"present is {chunk.name}); copy the complete chunk set"
                )
    for path in files:
        if path.is_symlink():
            raise BundleError(
                f"{path} is a symlink: bundle archives and chunks must be regular "
                "files; copy the file itself into the bundle"
            )
        if not path.is_file():
            raise BundleError(f"{path} is not a regular file")
    return files


class ArchiveStream(io.RawIOBase):
    """The files of one archive as one seekable byte stream (symlinks are not followed)."""

    def __init__(self, files: Sequence[Path]) -> None:
        super().__init__()
        self._files = list(files)
        self._sizes = [path.lstat().st_size for path in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self.size = sum(self._sizes)
        self._pos = 0
        self._open: tuple[int, int] | None = None  # (file index, fd)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fd(self, index: int) -> int:
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        if self._open is not None:
            os.close(self._open[1])
            self._open = None
        fd = os.open(self._files[index], os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        self._open = (index, fd)
        return fd

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not view or self._pos >= self.size:
            return 0
        index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
        while (
            index < len(self._files) - 1 and self._pos >= self._starts[index] + self._sizes[index]
        ):
            index += 1  # skip empty chunks
        within = self._pos - self._starts[index]
        want = min(len(view), self._sizes[index] - within)
        data = os.pread(self._fd(index), want, within)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the stream)."""
        self.seek(offset)
        out = bytearray()
        while len(out) < size and (piece := self.read(size - len(out))):
            out += piece
        return bytes(out)

    def close(self) -> None:
        if self._open is not None:
            os.close(self._open[1])
            self._open = None
        super().close()


def _open_stream(archive: Path) -> ArchiveStream:
    return ArchiveStream(archive_files(archive))


# -- one archive -----------------------------------------------------------------------------
class _ArchiveScan:
    """One pass over the headers of one archive (archive number ``number`` of the check)."""

    def __init__(self, tree: TreeCheck, archive: Path, number: int) -> None:
        self.tree = tree
        self.archive = archive
        self.number = number

    def problem(self, text: str) -> None:
        self.tree.check.problems.append(f"{self.archive.name}: {text}")

    def run(self) -> None:
        try:
            with _open_stream(self.archive) as raw:
                self.tree.check.files += len(raw._files)
                stream = io.BufferedReader(raw, buffer_size=1 << 16)
                if self._head_ok(stream, raw.size):
                    self._members(stream, raw.size)
        except MirrorError as exc:
            text = str(exc)
            self.problem(
                text.removeprefix(f"{self.archive}: ").removeprefix(
                    f"refusing to unpack {self.archive}: "
                )
            )
        except (tarfile.TarError, EOFError) as exc:
            self.problem(
                f"not a readable tar ({exc}); the file is truncated or corrupt, copy it again"
            )
        except OSError as exc:
            self.problem(f"cannot be read ({exc.strerror or exc})")

    def _head_ok(self, stream: io.BufferedReader[ArchiveStream], size: int) -> bool:
        head = stream.peek(tarfile.BLOCKSIZE)[: tarfile.BLOCKSIZE]
        for magic, kind in _COMPRESSED:
            if head.startswith(magic):
                self.problem(
                    f"is a {kind}-compressed archive: push reads plain tar archives "
                    "only (as d8 writes them); decompress it first"
                )
                return False
        if len(head) == tarfile.BLOCKSIZE and not head.strip(b"\0"):
            return True  # an empty archive: only its end-of-archive marker (checked below)
        if head[257:262] != b"ustar":
            self.problem("is not a tar archive (no ustar/GNU/PAX header at its start) or is empty")
            return False
        return True

    def _members(self, stream: io.BufferedReader[ArchiveStream], size: int) -> None:
        # Headers only; data is skipped by seeks. (Not closed: that would close ``stream``.)
        tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
        count = 0
        while (member := tar.next()) is not None:
            cast(Any, tar).members.clear()  # nothing is kept per entry
            count += 1
            if count > MAX_ARCHIVE_ENTRIES:
                self.problem(
                    f"has more than {MAX_ARCHIVE_ENTRIES} entries: refused (a bundle "
                    "archive holds far fewer; this one was not made by d8 or d8mirror)"
                )
                return
            if member.isdir():
                continue
            if member.issparse():  # its size is the expanded one: said before the size check
                raise BundleError(
                    f"entry {member.name!r} is a sparse file: bundles hold plain "
                    "regular files only (a sparse entry expands beyond the "
                    "archive)"
                )
            if member.offset_data + member.size > size:
                self.problem(
                    f"entry {member.name!r} runs past the end of the archive: it is "
                    "truncated (a chunk missing?); copy it again"
                )
                return
            self._member(tar, member)
        self.tree.check.entries += count
        self._end(stream, tar.offset, size)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        relative = safe_entry_path(self.archive, member)
        parts = relative.parts
        if parts[-1] == "index.json":
            self._index(tar, member, PurePosixPath(*parts[:-1]).as_posix() if parts[:-1] else "")
        elif len(parts) >= 3 and parts[-3:-1] == ("blobs", "sha256") and _BLOB.fullmatch(parts[-1]):
            layout = PurePosixPath(*parts[:-3]).as_posix() if parts[:-3] else ""
            digest = f"sha256:{parts[-1]}"
            if self.tree.deep:
                self._hash(tar, member, relative.as_posix(), digest)
            self.tree.blobs[(layout, digest)] = _Location(
                self.number, member.offset_data, member.size
            )

    def _hash(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, digest: str) -> None:
        source = tar.extractfile(member)
        actual = as_digest(
            sha256_stream_hex(source) if source is not None else sha256_bytes_hex(b"")
        )
        self.tree.check.blobs_hashed += 1
        if actual != digest:
            self.problem(f"{name} does not match its name (content hashes to {actual})")

    def _index(self, tar: tarfile.TarFile, member: tarfile.TarInfo, layout: str) -> None:
        where = f"{layout + '/' if layout else ''}index.json"
        if member.size > MAX_INDEX_BYTES:
            self.problem(
                f"{where} is {member.size} bytes, over the {MAX_INDEX_BYTES}-byte "
                "limit for an index: refused"
            )
            return
        self.tree.index_bytes += member.size
        if self.tree.index_bytes > MAX_TOTAL_INDEX_BYTES:
            self.problem(
                f"{where}: the bundle's index.json files together exceed "
                f"{MAX_TOTAL_INDEX_BYTES} bytes: refused"
            )
            return
        source = tar.extractfile(member)
        data = source.read() if source is not None else b""
        try:
            entries = parse_index(json.loads(data), where)
        except (ValueError, LayoutError) as exc:
            self.problem(f"{where} is not a valid index ({exc})")
            return
        for position, entry in enumerate(entries):
            tag = entry.short_tag
            if tag is not None and not is_valid_tag(tag):
                self.problem(
                    f"{where}: descriptor #{position} ({entry.digest}) has an invalid "
                    f"{ANNOTATION_SHORT_TAG} {tag[:140]!r}"
                )
        self.tree.indexes.setdefault(layout, []).append((self.number, entries))

    def _end(self, stream: io.BufferedReader[ArchiveStream], offset: int, size: int) -> None:
        """After the last entry: two zero blocks, then nothing but zeros to the end."""
        stream.seek(offset)
        marker = stream.read(2 * tarfile.BLOCKSIZE)
        if len(marker) < 2 * tarfile.BLOCKSIZE and not marker.strip(b"\0"):
            self.problem(
                f"ends at byte {size} without its end-of-archive marker: the archive "
                "is truncated (its last chunk missing?); copy it again"
            )
            return
        if marker.strip(b"\0"):
            self.problem(
                f"has a damaged entry header at byte {offset} (everything after it "
                "would be lost): the archive is corrupt or its chunks are out of "
                "order; copy it again"
            )
            return
        position = offset + len(marker)
        while piece := stream.read(_PIECE):
            if piece.strip(b"\0"):
                self.problem(
                    f"has data after its end-of-archive marker (from byte "
                    f"{position}): junk appended or a chunk that does not belong; "
                    "copy the archive again"
                )
                return
            position += len(piece)


# -- the tree the archives make ----------------------------------------------------------------
class TreeCheck:
    """The archives' layouts together, as the unpack merges them."""

    def __init__(
        self,
        archives: Sequence[Path],
        *,
        deep: bool,
        repository_of: RepositoryOf | None,
        omitted: Mapping[str, int] | None = None,
    ) -> None:
        self.archives = list(archives)
        self.deep = deep
        self.repository_of = repository_of
        self.omitted = dict(omitted or {})
        self.check = BundleCheck(archives=len(self.archives))
        self.blobs: dict[tuple[str, str], _Location] = {}
        self.indexes: dict[str, list[tuple[int, list[IndexEntry]]]] = {}
        self.index_bytes = 0
        self._checked: set[tuple[str, str]] = set()

    def blob_present(self, layout: str, digest: str) -> bool:
        """Whether a blob referenced in ``layout`` is in the tree, or omitted by the bundle's
        delta (then recorded as needed by ``layout``: the target must hold it)."""
        if (layout, digest) in self.blobs:
            return True
        if digest in self.omitted:
            self.check.omitted_needed.setdefault(digest, set()).add(layout)
            return True
        return False

    def blob_size(self, layout: str, digest: str) -> int:
        """The size of a present blob: its entry's, else the size its delta says."""
        location = self.blobs.get((layout, digest))
        return location.size if location is not None else self.omitted[digest]

    def run(self) -> BundleCheck:
        for number, archive in enumerate(self.archives):
            _ArchiveScan(self, archive, number).run()
        with ExitStack() as streams:
            opened: dict[int, ArchiveStream] = {}

            def stream(number: int) -> ArchiveStream:
                if number not in opened:
                    opened[number] = streams.enter_context(_open_stream(self.archives[number]))
                return opened[number]

            for layout in sorted(self.indexes):
                self._layout(layout, stream)
        return self.check

    def _problem(self, number: int, text: str) -> None:
        self.check.problems.append(f"{self.archives[number].name}: {text}")

    def _layout(self, layout: str, stream: Callable[[int], ArchiveStream]) -> None:
        first = self.indexes[layout][0][0]
        where = layout or "/"
        if layout and not is_valid_repository(layout):
            self._problem(
                first,
                f"layout {where} is not a valid repository name (lowercase "
                "letters, digits and . _ __ - separators only)",
            )
            return
        if self.repository_of is not None:
            try:
                self.repository_of(layout)
            except MirrorError as exc:
                self._problem(first, f"layout {where} cannot be pushed: {exc}")
                return
        for number, entries in self.indexes[layout]:
            for position, entry in enumerate(entries):
                self.check.descriptors += 1
                if not entry.short_tag:
                    self.check.untagged.append(
                        f"{self.archives[number].name}: {layout + '/' if layout else ''}"
                        f"index.json: descriptor #{position} ({entry.digest}) has no "
                        f"{ANNOTATION_SHORT_TAG} annotation"
                    )
                self._manifest(
                    number,
                    layout,
                    entry.digest,
                    entry.size,
                    entry.media_type,
                    f"{where}/index.json",
                    stream,
                    0,
                )

    def _manifest(
        self,
        number: int,
        layout: str,
        digest: str,
        size: int,
        media_type: str | None,
        by: str,
        stream: Callable[[int], ArchiveStream],
        depth: int,
    ) -> None:
        if (layout, digest) in self._checked:
            return
        self._checked.add((layout, digest))
        where = f"{layout + '/' if layout else ''}blobs/sha256/{digest[7:]}"
        location = self.blobs.get((layout, digest))
        if location is None:
            self._problem(
                number,
                f"manifest {digest} referenced by {by} is missing ({where} is in no archive)",
            )
            return
        self.check.manifests += 1
        owner = location.archive
        if location.size > MAX_MANIFEST_BYTES:
            self._problem(
                owner,
                f"manifest {where} is {location.size} bytes, over the "
                f"{MAX_MANIFEST_BYTES}-byte limit for a manifest",
            )
            return
        source = stream(owner)
        data = source.read_at(location.offset, location.size)
        actual = sha256_bytes_digest(data)
        if actual != digest:
            self._problem(
                owner,
                f"manifest {where} does not match its digest (content hashes "
                f"to {actual}): it was modified or damaged; refusing to publish it",
            )
            return
        if size >= 0 and size != location.size:
            self._problem(owner, f"manifest {where} is {location.size} bytes, {by} says {size}")
        doc = _json_object(data)
        if doc is None:
            self._problem(owner, f"manifest {where} is not a JSON object")
            return
        for child, child_size, child_type, is_manifest in _references(doc, media_type):
            if child is None:
                self._problem(owner, f"manifest {where} has a malformed descriptor")
            elif is_manifest:
                if depth >= _MAX_DEPTH:
                    self._problem(owner, f"manifest {where} nests indexes too deeply")
                else:
                    self._manifest(
                        owner,
                        layout,
                        child,
                        child_size,
                        child_type,
                        f"index {digest}",
                        stream,
                        depth + 1,
                    )
            elif not self.blob_present(layout, child):
                self._problem(
                    owner,
                    f"blob {child} referenced by manifest {digest} is missing "
                    f"from {layout + '/' if layout else ''}blobs/sha256/",
                )
            elif child_size >= 0 and self.blob_size(layout, child) != child_size:
                self._problem(
                    owner,
                    f"blob {child} of manifest {digest} is "
                    f"{self.blob_size(layout, child)} bytes, the manifest says "
                    f"{child_size}",
                )


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _references(
    doc: dict[str, Any],
    media_type: str | None,
) -> Iterator[tuple[str | None, int, str | None, bool]]:
    """(digest or None when malformed, size, media type, is a manifest) of what ``doc`` needs."""
    kind = media_type or str(doc.get("mediaType") or "")
    is_index = kind in INDEX_TYPES or "manifests" in doc
    if is_index:
        items: Any = doc.get("manifests") or []
    else:
        layers = doc.get("layers") or []
        items = (
            ([doc["config"]] if "config" in doc else []) + layers
            if isinstance(layers, list)
            else None
        )
    if not isinstance(items, list):
        yield None, -1, None, False
        return
    for item in items:
        digest = item.get("digest") if isinstance(item, dict) else None
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            yield None, -1, None, False
            continue
        size = item.get("size", -1)
        media = item.get("mediaType")
        yield (
            digest,
            size if isinstance(size, int) and not isinstance(size, bool) else -1,
            media if isinstance(media, str) else None,
            is_index,
        )


# -- entry points ------------------------------------------------------------------------------
def check_archives(
    archives: Sequence[Path],
    *,
    deep: bool = False,
    repository_of: RepositoryOf | None = None,
    omitted: Mapping[str, int] | None = None,
) -> BundleCheck:
    """Run every check of the module docstring over ``archives`` (in push order);
    ``repository_of(layout path)`` may raise a MirrorError for a layout the push cannot route;
    ``deep`` hashes every blob too (verify); ``omitted``: a delta bundle's omitted blobs
    (digest → size), accepted where the archives lack them."""
    return TreeCheck(archives, deep=deep, repository_of=repository_of, omitted=omitted).run()


def refuse_invalid(
    archives: Sequence[Path],
    *,
    repository_of: RepositoryOf | None = None,
    omitted: Mapping[str, int] | None = None,
) -> BundleCheck:
    """:func:`check_archives` for a push: BundleError listing the problems (each names its
    archive; a checksum sidecar that does not match, which says best why, comes first) when
    there is any; nothing may be uploaded then."""
    check = check_archives(archives, repository_of=repository_of, omitted=omitted)
    if check.problems:
        named = [a for a in archives if any(p.startswith(f"{a.name}: ") for p in check.problems)]
        problems = [p for a in named for p in _sidecar_problems(a)] + check.problems
        shown = problems[:SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        raise BundleError(
            "refusing to push a corrupt bundle: "
            + "; ".join(shown)
            + (f"; … and {more} more" if more else "")
            + ". Nothing was pushed: run `d8mirror "
            "verify` on the bundle, copy the named archives again or pull them again."
        )
    return check


def _sidecar_problems(archive: Path) -> list[str]:
    try:
        return check_archive_sidecars(archive)
    except (MirrorError, OSError):
        return []
