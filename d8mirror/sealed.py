"""Small JSON files sealed by a ``.sha256`` sidecar: ``receipt.json``, ``delta.json``.

They cross the air gap beside the bundles (removable media, S3, an OCI artifact), so a reader
never trusts one whose sidecar is missing or does not match: a tampered or truncated file is
refused (:class:`~d8mirror.errors.SealedFileError`) before anything uses it. The JSON is written
deterministically (sorted keys, two-space indent, one trailing newline): the same content gives
the same bytes and the same SHA-256. Writes are atomic, the file first, then its sidecar (a
reader between the two sees a mismatch and refuses, never half a file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from d8mirror.bundle.checksums import sha256_line
from d8mirror.errors import PathNotFoundError, SealedFileError
from d8mirror.files import os_error, write_atomic
from d8mirror.hashing import sha256_bytes_hex

SIDECAR_SUFFIX = ".sha256"
#: A receipt of a large site is a few MB; anything far beyond is not one of ours.
MAX_SEALED_BYTES = 256 * 1024 * 1024


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def canonical_json(obj: Any) -> bytes:
    """Deterministic bytes of ``obj``."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_sealed(path: Path, data: bytes) -> str:
    """Write ``data`` and its sidecar atomically; returns the SHA-256 hex of ``data``."""
    hex_digest = sha256_bytes_hex(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        write_atomic(sidecar_of(path), sha256_line(hex_digest, path.name).encode("ascii"))
    except OSError as exc:
        raise os_error(exc, path, "write") from exc
    return hex_digest


def check_sealed(data: bytes, sidecar_text: str, *, where: str) -> str:
    """The SHA-256 hex of ``data`` when it matches the sidecar's, else SealedFileError."""
    expected = (sidecar_text.split(maxsplit=1) or [""])[0].lower()
    actual = sha256_bytes_hex(data)
    if expected != actual:
        raise SealedFileError(
            f"{where} does not match its checksum file {where}{SIDECAR_SUFFIX} "
            f"(SHA-256 {actual}, expected {expected or 'nothing'}): it was modified or "
            "truncated on the way; copy it again from where it was written"
        )
    return actual


def read_sealed(path: Path) -> tuple[bytes, str]:
    """(bytes, SHA-256 hex) of a sealed file after checking its sidecar."""
    sidecar = sidecar_of(path)
    if not path.is_file():
        raise PathNotFoundError(f"{path} does not exist; check the path")
    if not sidecar.is_file():
        raise SealedFileError(
            f"{path} has no checksum file {sidecar.name} beside it: it cannot be verified, so "
            "it is not used; copy both files"
        )
    try:
        if path.stat().st_size > MAX_SEALED_BYTES:
            raise SealedFileError(f"{path} is larger than {MAX_SEALED_BYTES} bytes: not ours")
        data = path.read_bytes()
        sidecar_text = sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise os_error(exc, path, "read") from exc
    return data, check_sealed(data, sidecar_text, where=str(path))


def parse_json_object(data: bytes, *, where: str, error: type[Exception]) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise error(f"{where} is not a JSON object")
    return obj
