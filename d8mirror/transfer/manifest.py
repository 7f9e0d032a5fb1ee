"""The transfer manifest: every file of a bundle with its size, SHA-256 and GOST digest.

It is the commit record of an upload: written last, after every file it lists was uploaded
and verified, and read first by a download, which refuses a remote bundle without one.
``d8mirror-transfer.json``::

    {"version": 1, "files": [{"name": "package-a.tar", "size": 123, "sha256": "<hex>",
                              "gost": "<hex or absent>"}]}

The SHA-256 is computed here, streamed, and cross-checked against the ``<file>.sha256``
sidecar when there is one, so a bundle corrupted on disk is never shipped. The GOST digest is
taken from the ``<file>.gostsum`` sidecar when present (recomputing Streebog is slow;
``verify_bundle`` does that on the far side).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d8mirror.errors import BundleError, ConfigError
from d8mirror.files import write_text_atomic
from d8mirror.hashing import sha256_file_hex
from d8mirror.names import (
    GOST_SUFFIX,
    PARTIAL_SUFFIX,
    SHA256_SUFFIX,
    TMP_SUFFIX,
    sha256_sidecar,
    with_suffix,
)

from .errors import TransferError, TransferIntegrityError

MANIFEST_NAME = "d8mirror-transfer.json"
FORMAT_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SKIPPED_SUFFIXES = (PARTIAL_SUFFIX, TMP_SUFFIX)
_MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle."""

    name: str
    size: int
    sha256: str
    gost: str | None = None

    @property
    def digest(self) -> str:
        """The OCI digest form, ``sha256:<hex>``."""
        return f"sha256:{self.sha256}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "size": self.size, "sha256": self.sha256}
        if self.gost is not None:
            out["gost"] = self.gost
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> FileEntry:
        if not isinstance(obj, dict):
            raise TransferError(f"{where}: a file entry is not a JSON object")
        name, size, sha, gost = obj.get("name"), obj.get("size"), obj.get("sha256"), obj.get("gost")
        if not isinstance(name, str) or not is_safe_name(name):
            raise TransferError(f"{where}: unsafe or missing file name {name!r:.100}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise TransferError(f"{where}: {name} has an invalid size {size!r:.50}")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise TransferError(f"{where}: {name} has an invalid sha256 {sha!r:.100}")
        if gost is not None and (not isinstance(gost, str) or not _HEX64.match(gost)):
            raise TransferError(f"{where}: {name} has an invalid gost digest {gost!r:.100}")
        return cls(name, size, sha, gost)


@dataclass(frozen=True)
class TransferManifest:
    """Every file of a bundle, sorted by name."""

    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def to_bytes(self) -> bytes:
        doc = {"version": FORMAT_VERSION, "files": [f.to_json() for f in self.files]}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> TransferManifest:
        """Parse and validate; TransferError naming ``where`` when malformed."""
        if len(data) > _MAX_MANIFEST_BYTES:
            raise TransferError(
                f"{where}: transfer manifest is larger than "
                f"{_MAX_MANIFEST_BYTES} bytes; refusing it"
            )
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransferError(
                f"{where}: transfer manifest is not JSON ({exc}); upload the bundle again"
            ) from exc
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise TransferError(f"{where}: not a version {FORMAT_VERSION} transfer manifest")
        files = doc.get("files")
        if not isinstance(files, list):
            raise TransferError(f"{where}: transfer manifest has no 'files' list")
        entries = [FileEntry.from_json(item, where) for item in files]
        if len({e.name for e in entries}) != len(entries):
            raise TransferError(f"{where}: transfer manifest lists a file twice")
        return cls(tuple(sorted(entries, key=lambda e: e.name)))


def is_safe_name(name: str) -> bool:
    """A plain file name: no directories, not hidden, no control characters."""
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and name.isprintable()
        and len(name) <= 255
    )


def transfer_files(bundle_dir: Path) -> list[Path]:
    """Regular top-level files of a bundle to ship, sorted: archives, chunks, sidecars,
    report.json. Hidden files (the ``.tmp`` work dir), ``*.partial``/``*.tmp`` leftovers,
    symlinks and the transfer manifest itself are left out."""
    if not bundle_dir.is_dir():
        raise ConfigError(f"bundle directory {bundle_dir} does not exist or is not a directory")
    found = [
        p
        for p in bundle_dir.iterdir()
        if p.is_file()
        and not p.is_symlink()
        and is_safe_name(p.name)
        and p.name != MANIFEST_NAME
        and not p.name.endswith(_SKIPPED_SUFFIXES)
    ]
    if not found:
        raise BundleError(f"no files to transfer in {bundle_dir}")
    return sorted(found)


def _sidecar_text(path: Path, suffix: str) -> str | None:
    sidecar = with_suffix(path, suffix)
    if not sidecar.is_file():
        return None
    return sidecar.read_text(encoding="utf-8", errors="replace").strip()


def describe_file(path: Path) -> FileEntry:
    """Size and SHA-256 of ``path`` (streamed), GOST from its sidecar; refuses a file whose
    ``.sha256`` sidecar disagrees with its content."""
    sha = sha256_file_hex(path)
    sidecar = _sidecar_text(path, SHA256_SUFFIX)
    if sidecar is not None and sidecar.split(" ", 1)[0].lower() != sha:
        raise TransferIntegrityError(
            f"{path} does not match its {sha256_sidecar(path).name} sidecar: the bundle is "
            "corrupt on disk; pull it again before uploading",
            expected=sidecar.split(" ", 1)[0],
            actual=sha,
        )
    gost = _sidecar_text(path, GOST_SUFFIX)
    gost = gost.lower() if gost and _HEX64.match(gost.lower()) else None
    return FileEntry(path.name, path.stat().st_size, sha, gost)


def build_manifest(bundle_dir: Path, files: Iterable[Path] | None = None) -> TransferManifest:
    """The manifest of ``bundle_dir`` (every :func:`transfer_files` entry, hashed)."""
    paths = transfer_files(bundle_dir) if files is None else sorted(files)
    return TransferManifest(tuple(describe_file(p) for p in paths))


def is_present(path: Path, entry: FileEntry) -> bool:
    """Whether ``path`` already holds exactly ``entry`` (size first, then a streamed hash)."""
    return (
        path.is_file()
        and path.stat().st_size == entry.size
        and sha256_file_hex(path) == entry.sha256
    )


def write_local_manifest(dest_dir: Path, manifest: TransferManifest) -> None:
    """The manifest beside downloaded files: written last, atomically."""
    write_text_atomic(dest_dir / MANIFEST_NAME, manifest.to_bytes().decode())
