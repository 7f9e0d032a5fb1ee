"""Archive files on disk: one tar or a set of exact-size chunks (R-7.3, R-7.4; Q15).

Writing: :class:`ArchiveFileWriter` splits a byte stream into ``<name>.NNNN.chunk`` files of
exactly ``chunk_size`` bytes (the last one shorter, never an empty trailing chunk), or writes one
``<name>`` file when ``chunk_size`` is 0. Every file is staged as ``….tmp`` and only renamed by
the caller's :class:`~d8mirror.files.Staging` commit.

Reading: :func:`open_archive` streams ``<name>`` or the chunks ``.0000``, ``.0001``, … up to the
first missing index (an empty trailing chunk written by d8 is accepted).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from d8mirror.errors import BundleError, ChunkSetError
from d8mirror.files import Staging, os_error, remove_if_exists, staging_path
from d8mirror.names import (
    CHUNK_NAME,
    CHUNK_SUFFIX,
    SIDECAR_SUFFIXES,
    TMP_SUFFIX,
    chunk_name,
    gost_sidecar,
    sha256_sidecar,
)

from .checksums import FileDigests, stage_sidecars


def chunk_path(archive: Path, index: int) -> Path:
    """``<archive>.NNNN.chunk`` (four digits, more past 9999)."""
    return archive.with_name(chunk_name(archive.name, index))


def existing_chunks(archive: Path) -> list[Path]:
    """Chunk files of ``archive`` present on disk, by index (gaps included)."""
    if not archive.parent.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for path in archive.parent.iterdir():
        match = CHUNK_NAME.match(path.name)
        if match and match["base"] == archive.name:
            found.append((int(match["index"]), path))
    return [path for _index, path in sorted(found)]


class ArchiveFileWriter:
    """A writable byte sink that lays the archive out as one file or exact-size chunks."""

    def __init__(
        self, archive: Path, staging: Staging, *, chunk_size: int = 0, gost: bool = False
    ) -> None:
        if chunk_size < 0:
            raise ValueError("chunk_size must be >= 0")
        self.archive = archive
        self.chunk_size = chunk_size
        self._staging = staging
        self._gost = gost
        self._files: list[Path] = []
        self._stream: BinaryIO | None = None
        self._written = 0
        self._digests = FileDigests(gost=False)  # replaced per file by _open_next
        #: GOST digest of each file, in order (when ``gost``): remembered once committed.
        self.gost_digests: list[str] = []
        self._aborted = False
        # The whole stream's SHA-256: the single file's own when not chunked (one pass).
        self._whole = hashlib.sha256() if chunk_size else None
        self._single_sha256: str | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Final names of the files written so far, in order."""
        return tuple(self._files)

    def _final_name(self, index: int) -> Path:
        return chunk_path(self.archive, index) if self.chunk_size else self.archive

    def _open_next(self) -> BinaryIO:
        final = self._final_name(len(self._files))
        tmp = staging_path(final)
        self._staging.add(tmp, final)
        self._files.append(final)
        try:
            stream = tmp.open("wb")
        except OSError as exc:
            raise os_error(exc, final, "create") from exc
        self._stream, self._written, self._digests = stream, 0, FileDigests(gost=self._gost)
        return stream

    def _close_current(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        final = self._files[-1]
        if self._whole is None:
            self._single_sha256 = self._digests.sha256.hexdigest()
        try:
            stream.close()
            stage_sidecars(final, self._digests, self._staging)
            if self._digests.gost is not None:
                self.gost_digests.append(self._digests.gost.hexdigest())
        except OSError as exc:
            raise os_error(exc, final, "write") from exc

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._aborted:
            raise BundleError(f"archive {self.archive} was aborted; nothing more can be written")
        view = memoryview(data).cast("B")
        if self._whole is not None:
            self._whole.update(view)
        while view:
            stream = self._stream or self._open_next()
            room = self.chunk_size - self._written if self.chunk_size else len(view)
            piece = view[:room]
            try:
                stream.write(piece)
            except OSError as exc:
                raise os_error(exc, self._files[-1], "write") from exc
            self._digests.update(piece)
            self._written += len(piece)
            view = view[len(piece) :]
            if self.chunk_size and self._written == self.chunk_size:
                self._close_current()
        return len(data)

    def finish(self) -> tuple[Path, ...]:
        """Close the last file (an empty archive still gets one file); return the final names."""
        if not self._files:
            self._open_next()
        self._close_current()
        return self.files

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written (available after :meth:`finish`)."""
        if self._whole is not None:
            return self._whole.hexdigest()
        if self._single_sha256 is None:
            raise BundleError(f"archive {self.archive} is not finished: no checksum yet")
        return self._single_sha256

    def abort(self) -> None:
        """Close without staging sidecars; the caller discards the staging."""
        self._aborted = True
        self._digests.discard()
        stream, self._stream = self._stream, None
        if stream is not None:
            # On a full disk the close flushes and fails again; the file is discarded anyway,
            # and that second error must not replace the DiskSpaceError being raised.
            with suppress(OSError):
                stream.close()


def remove_stale_staging(archive: Path) -> None:
    """Delete ``<name>.tmp`` and ``<name>…chunk.tmp`` (and sidecar temps) left by a crashed run."""
    if not archive.parent.is_dir():
        return
    for path in archive.parent.iterdir():
        if path.name.startswith(archive.name) and path.name.endswith(TMP_SUFFIX):
            rest = path.name[len(archive.name) : -len(TMP_SUFFIX)]
            if _is_own_suffix(rest):
                remove_if_exists(path)


def _is_own_suffix(rest: str) -> bool:
    for sidecar in ("", *SIDECAR_SUFFIXES):
        body = rest[: len(rest) - len(sidecar)] if sidecar and rest.endswith(sidecar) else rest
        if body == "" or re.fullmatch(r"\.\d{4,}" + re.escape(CHUNK_SUFFIX), body):
            return True
    return False


def remove_stale_finals(archive: Path, keep: tuple[Path, ...], *, gost: bool) -> None:
    """After a commit, delete files of an older pack of ``archive`` that ``keep`` does not cover:
    the plain tar or chunks beyond the new count, their sidecars, and ``.gostsum`` files when
    GOST is off."""
    kept = set(keep)
    for path in [archive, *existing_chunks(archive)]:
        if path not in kept:
            for stale in (path, *_sidecars(path)):
                remove_if_exists(stale)
        elif not gost:
            remove_if_exists(gost_sidecar(path))


def _sidecars(path: Path) -> tuple[Path, Path]:
    return sha256_sidecar(path), gost_sidecar(path)


class _ChunkSetReader(io.RawIOBase):
    """Reads ``<archive>.0000.chunk``, ``.0001``, … as one stream until the first missing index."""

    def __init__(self, archive: Path) -> None:
        super().__init__()
        self._archive = archive
        self._index = 0
        self._current: BinaryIO | None = self._open(0)
        if self._current is None:
            raise ChunkSetError(
                f"archive {archive} not found: neither {archive.name} nor its first chunk "
                f"{chunk_path(archive, 0).name} exists; copy the complete bundle"
            )

    def _open(self, index: int) -> BinaryIO | None:
        try:
            return chunk_path(self._archive, index).open("rb")
        except FileNotFoundError:
            return None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._current is not None:
            count = self._current.readinto(buffer)  # type: ignore[attr-defined]
            if count:
                return int(count)
            self._current.close()
            self._index += 1
            self._current = self._open(self._index)
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


@contextmanager
def open_archive(path: Path) -> Iterator[BinaryIO]:
    """Stream the canonical archive ``<x>.tar``: the plain file, else its chunk set."""
    stream: BinaryIO
    if path.is_file():
        stream = path.open("rb")
    else:
        stream = io.BufferedReader(_ChunkSetReader(path), buffer_size=1024 * 1024)
    with stream:
        yield stream
