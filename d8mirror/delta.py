"""Delta bundles: the blobs a bundle leaves out because the target already holds them.

A pull given a receipt (``--delta-from``) writes every selected image's ``index.json`` and
manifests but no blob the receipt lists; ``delta.json`` + ``delta.json.sha256`` (format
``d8mirror.delta/v1``) in the bundle directory say so: the bundle's ``id`` (ordered by time:
``delta-<UTC stamp>-<base hash>``), the SHA-256 of the base receipt, and every omitted blob with
its size and a repository of the receipt (relative to the packages root) where the target
holds it. A push reads it to check, before any write, that the target holds every omitted blob
(:class:`~d8mirror.errors.DeltaBaseMissingError` otherwise) and to mount them where needed.

A bundle without ``delta.json`` is a full bundle, interchangeable with ``d8 mirror``.

Every bundle has an id (:func:`bundle_id`), recorded in the receipt of the push that applied it:
the delta's ``id`` for a delta bundle, else ``full-<16 hex>`` derived from the archives'
``.sha256`` sidecars (:func:`archives_id`), so the same archives give the same id wherever they
are copied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d8mirror.bundle.chunks import existing_chunks
from d8mirror.errors import BundleError, ReceiptError
from d8mirror.hashing import sha256_bytes_hex, sha256_file_hex
from d8mirror.names import ARCHIVE_FILE_SUFFIXES, sha256_sidecar
from d8mirror.reference import is_valid_digest
from d8mirror.sealed import (
    canonical_json,
    parse_json_object,
    read_sealed,
    sidecar_of,
    write_sealed,
)

DELTA_FORMAT = "d8mirror.delta/v1"
DELTA_FILE = "delta.json"
FULL_ID_PREFIX = "full-"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, order=True)
class OmittedBlob:
    digest: str
    size: int
    repository: str  # relative to the packages root, e.g. "packages/console"

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "repository": self.repository}


@dataclass(frozen=True)
class Delta:
    id: str
    created: str
    base_receipt_sha256: str
    omitted: tuple[OmittedBlob, ...] = ()

    @classmethod
    def build(
        cls,
        base_receipt_sha256: str,
        omitted: Iterable[OmittedBlob],
        *,
        now: datetime | None = None,
    ) -> Delta:
        """One entry per digest (the first repository given wins), sorted."""
        moment = now or datetime.now(UTC)
        by_digest: dict[str, OmittedBlob] = {}
        for blob in sorted(omitted):
            by_digest.setdefault(blob.digest, blob)
        return cls(
            id=new_delta_id(base_receipt_sha256, moment),
            created=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            base_receipt_sha256=base_receipt_sha256,
            omitted=tuple(sorted(by_digest.values())),
        )

    @property
    def bytes_omitted(self) -> int:
        return sum(b.size for b in self.omitted)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(b.digest for b in self.omitted)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DELTA_FORMAT,
            "id": self.id,
            "created": self.created,
            "base_receipt_sha256": self.base_receipt_sha256,
            "omitted": [b.to_json() for b in self.omitted],
            "bytes_omitted": self.bytes_omitted,
        }


def new_delta_id(base_receipt_sha256: str, moment: datetime) -> str:
    """``delta-20261202T173000Z-<12 hex of the base receipt>``: sorts in time order."""
    return f"delta-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{base_receipt_sha256[:12]}"


def write_delta(bundle_dir: Path, delta: Delta) -> Path:
    path = bundle_dir / DELTA_FILE
    write_sealed(path, canonical_json(delta.to_json()))
    return path


def is_delta_bundle(bundle_dir: Path) -> bool:
    return (bundle_dir / DELTA_FILE).is_file() or sidecar_of(bundle_dir / DELTA_FILE).is_file()


def read_delta(bundle_dir: Path) -> Delta | None:
    """The bundle's delta description (sidecar checked first), None for a full bundle."""
    if not is_delta_bundle(bundle_dir):
        return None
    data, _ = read_sealed(bundle_dir / DELTA_FILE)
    return parse_delta(data, where=str(bundle_dir / DELTA_FILE))


def parse_delta(data: bytes, *, where: str = DELTA_FILE) -> Delta:
    obj = parse_json_object(data, where=where, error=ReceiptError)
    if obj.get("format") != DELTA_FORMAT:
        raise ReceiptError(
            f"{where} is not a d8mirror delta description (format {obj.get('format')!r})"
        )
    fields = [obj.get(k) for k in ("id", "created", "base_receipt_sha256")]
    if not all(isinstance(v, str) and v for v in fields):
        raise ReceiptError(f"{where}: 'id', 'created' and 'base_receipt_sha256' are required")
    omitted = obj.get("omitted", [])
    if not isinstance(omitted, list):
        raise ReceiptError(f"{where}: 'omitted' must be a list")
    return Delta(
        id=str(fields[0]),
        created=str(fields[1]),
        base_receipt_sha256=str(fields[2]),
        omitted=tuple(sorted(_omitted(x, where) for x in omitted)),
    )


def _omitted(value: Any, where: str) -> OmittedBlob:
    if not isinstance(value, dict):
        raise ReceiptError(f"{where}: an omitted blob must be an object")
    digest, size, repo = value.get("digest"), value.get("size"), value.get("repository")
    if not (isinstance(digest, str) and is_valid_digest(digest)):
        raise ReceiptError(f"{where}: {digest!r:.80} is not a digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ReceiptError(f"{where}: blob {digest} has no valid size")
    if not isinstance(repo, str) or not repo:
        raise ReceiptError(f"{where}: blob {digest} names no repository")
    return OmittedBlob(digest, size, repo)


# -- bundle ids ----------------------------------------------------------------------------------
def bundle_id(bundle_dir: Path) -> str:
    """The id of the bundle in ``bundle_dir``: its delta's id (``delta.json``, sidecar checked)
    for a delta bundle, else :func:`archives_id` of every archive file in it."""
    delta = read_delta(bundle_dir)
    if delta is not None:
        return delta.id
    return archives_id(_archive_files_in(bundle_dir))


def push_bundle_id(
    bundle: Path | None, archives: Sequence[Path], *, hash_missing: bool = True
) -> str:
    """The id of what a push was given: a delta bundle directory's delta id, else
    :func:`archives_id` of the archives given (a bundle directory's, a single archive,
    ``--file``; ``<x>.tar`` of a chunk set stands for its chunks). Without ``hash_missing``,
    ``""`` when an archive file has no ``.sha256`` sidecar (its id would take hashing it)."""
    if bundle is not None and bundle.is_dir():
        delta = read_delta(bundle)
        if delta is not None:
            return delta.id
    files = [f for archive in archives for f in _files_of(archive)]
    if not files:
        raise BundleError("no archive file to derive the bundle's id from")
    if not hash_missing and not all(sha256_sidecar(f).is_file() for f in files):
        return ""
    return archives_id(files)


def archives_id(files: Iterable[Path]) -> str:
    """``full-<first 16 hex of the SHA-256 over the sorted "<name> <sha256>" lines>`` of the
    archive files (tars, chunks): each file's SHA-256 is read from its ``.sha256`` sidecar; a
    file without one (``d8 mirror`` writes none) is hashed, which gives the same id as if the
    sidecar were there. Deterministic: independent of the order and the directory."""
    lines = sorted(f"{path.name} {_file_sha256(path)}" for path in files)
    if not lines:
        raise BundleError("no archive file to derive the bundle's id from")
    text = "".join(line + "\n" for line in lines)
    return FULL_ID_PREFIX + sha256_bytes_hex(text.encode("utf-8"))[:16]


def _archive_files_in(bundle_dir: Path) -> list[Path]:
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir} is not a bundle directory")
    return sorted(
        p for p in bundle_dir.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_FILE_SUFFIXES)
    )


def _files_of(archive: Path) -> list[Path]:
    """The files of an archive: itself, or its chunks when only they exist."""
    return [archive] if archive.is_file() else existing_chunks(archive)


def _file_sha256(path: Path) -> str:
    sidecar = sha256_sidecar(path)
    if not sidecar.is_file():
        return sha256_file_hex(path)
    text = sidecar.read_text(encoding="utf-8", errors="replace")
    hex_digest = (text.split(maxsplit=1) or [""])[0].lower()
    if not _HEX64.match(hex_digest):
        raise BundleError(
            f'{sidecar} is not a sha256sum line ("<64 hex>  <file name>"): copy it again '
            "with its archive"
        )
    return hex_digest
