"""SHA-256 helpers under one naming rule: ``*_hex`` returns lowercase hex, ``*_digest`` returns
the OCI digest ``sha256:<hex>``. Files and streams are hashed in 1 MiB pieces, never read whole.

Incremental hashing while bytes are written (archives, downloads) keeps its own
``hashlib.sha256()`` object; Streebog (GOST) lives in :mod:`d8mirror.bundle.checksums`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

PIECE = 1024 * 1024
SHA256_PREFIX = "sha256:"


def as_digest(hex_digest: str) -> str:
    """``<hex>`` → ``sha256:<hex>``."""
    return SHA256_PREFIX + hex_digest


def sha256_bytes_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_bytes_digest(data: bytes) -> str:
    return as_digest(sha256_bytes_hex(data))


def sha256_stream_hex(stream: IO[bytes]) -> str:
    """Hex SHA-256 of what is left in ``stream``, read in pieces."""
    hasher = hashlib.sha256()
    while piece := stream.read(PIECE):
        hasher.update(piece)
    return hasher.hexdigest()


def sha256_file_hex(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    with path.open("rb") as stream:
        return sha256_stream_hex(stream)


def sha256_file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, streamed."""
    return as_digest(sha256_file_hex(path))
