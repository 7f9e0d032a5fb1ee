"""Delta bundles: the blobs a bundle leaves out because the target already holds them.

A pull given a receipt (``--delta-from``) writes every selected image's ``index.json`` and
manifests but no blob the receipt lists; ``delta.json`` + ``delta.json.sha256`` (format
``d8mirror.delta/v1``) in the bundle directory say so: the bundle's ``id`` (ordered by time:
``delta-<UTC stamp>-<base hash>``), the SHA-256 of the base receipt, and every omitted blob with
its size and a repository of the receipt (relative to the packages root) where the target
holds it. A push reads it to check, before any write, that the target holds every omitted blob
(:class:`~d8mirror.errors.DeltaBaseMissingError` otherwise) and to mount them where needed.

A bundle without ``delta.json`` is a full bundle, interchangeable with ``d8 mirror``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d8mirror.errors import ReceiptError
from d8mirror.names import ARCHIVE_FILE_SUFFIXES, SHA256_SUFFIX
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


# -- STAND-IN (helper "import"): the "receipt" helper owns bundle_id; the lead keeps theirs --------
def bundle_id(bundle_dir: Path) -> str:
    """The delta's id for a delta bundle, else ``full-<16 hex>``: the SHA-256 over the sorted
    ``"<name> <sha256>"`` lines of the bundle's archive ``.sha256`` sidecars (deterministic)."""
    delta = read_delta(bundle_dir)
    if delta is not None:
        return delta.id
    lines = sorted(
        f"{sidecar.name.removesuffix(SHA256_SUFFIX)} {_sidecar_hex(sidecar)}"
        for sidecar in bundle_dir.glob(f"*{SHA256_SUFFIX}")
        if sidecar.name.removesuffix(SHA256_SUFFIX).endswith(ARCHIVE_FILE_SUFFIXES)
    )
    digest = hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()
    return f"full-{digest[:16]}"


def _sidecar_hex(sidecar: Path) -> str:
    return (sidecar.read_text(encoding="utf-8", errors="replace").split() or [""])[0].lower()


# -- end of STAND-IN ------------------------------------------------------------------------------


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
