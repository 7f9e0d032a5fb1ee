"""Hashing file and stream helpers for blob transfers (never the whole blob in memory)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

from d8mirror.errors import ConfigError, DigestMismatchError, LocalContentError, wrap_os_error

CHUNK_SIZE = 1 << 20


def file_chunks(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Yield ``length`` bytes of ``path`` from ``start`` in pieces of at most 1 MiB."""
    with path.open("rb") as source:
        source.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            piece = source.read(want)
            if not piece:
                return
            if remaining is not None:
                remaining -= len(piece)
            yield piece


def source_range(
    source: Path, digest: str, *, size: int | None, offset: int | None
) -> tuple[int, int]:
    """(first byte, length) of blob ``digest`` in ``source``: the whole file (whose length must
    be ``size`` when given), or with ``offset`` the ``size`` bytes from there, which must exist."""
    try:
        file_size = source.stat().st_size
    except OSError as exc:
        raise wrap_os_error(exc, str(source)) from exc
    if offset is None:
        if size is not None and size != file_size:
            raise LocalContentError(
                f"{source} has {file_size} bytes, not the {size} of blob {digest}",
                expected=str(size),
                actual=str(file_size),
            )
        return 0, file_size
    if size is None or size < 0 or offset < 0:
        raise ConfigError(
            f"a blob range of {source} needs offset >= 0 and size >= 0, got "
            f"offset {offset} and size {size}"
        )
    if offset + size > file_size:
        raise LocalContentError(
            f"{source} has {file_size} bytes, too few for the {size} "
            f"bytes of blob {digest} from byte {offset}: the file is "
            "truncated",
            expected=str(offset + size),
            actual=str(file_size),
        )
    return offset, size


class BlobReader(io.RawIOBase):
    """A readable stream over a blob download; raises DigestMismatchError at EOF if wrong."""

    def __init__(self, pieces: Iterator[bytes], digest: str, where: str) -> None:
        super().__init__()
        self._pieces = pieces
        self._digest = digest
        self._where = where
        self._hasher = hashlib.sha256()
        self._buffer = b""
        self._pos = 0
        self._eof = False
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buffer) and not self._eof:
            self._next_piece()
        count = min(len(buffer), len(self._buffer) - self._pos)
        buffer[:count] = self._buffer[self._pos : self._pos + count]
        self._pos += count
        return count

    def _next_piece(self) -> None:
        piece = next(self._pieces, None)
        if piece is None:
            self._eof = True
            self._verify()
            return
        self._hasher.update(piece)
        self.bytes_read += len(piece)
        self._buffer = piece
        self._pos = 0

    def _verify(self) -> None:
        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self._digest:
            raise DigestMismatchError(
                f"blob {self._where} hashes to {actual}, not {self._digest}: the registry "
                "served corrupted data; retry, or repair the blob in the source registry",
                expected=self._digest,
                actual=actual,
            )
