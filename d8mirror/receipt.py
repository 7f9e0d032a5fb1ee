"""Receipts: what the air-gapped target registry holds for packages, carried out of the gap.

A receipt (``receipt.json`` + ``receipt.json.sha256``, format ``d8mirror.receipt/v1``) lists
the target's images as (repository, tag, digest), repositories relative to the packages
``root`` (``packages/console``, ``packages/console/version``…), every blob digest those images
use (configs, layers; manifests are the images' digests and their index children), and the
ids of the bundles applied. It holds digests, tags and paths only: no credentials, nothing of
the images' content, so it is safe to carry out of the gap. ``root`` is the packages root in
the target, with or without its registry host.

The JSON is sorted and deterministic (:mod:`d8mirror.sealed`): the same holdings give the same
bytes except ``created``. A receipt is read only through its sidecar check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d8mirror.errors import ReceiptError
from d8mirror.reference import is_valid_digest
from d8mirror.sealed import canonical_json, parse_json_object, read_sealed, write_sealed

RECEIPT_FORMAT = "d8mirror.receipt/v1"
RECEIPT_FILE = "receipt.json"


def utc_now() -> str:
    """``created`` stamps: UTC, seconds, ``2026-12-02T17:30:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, order=True)
class HeldImage:
    """One tag the target holds: ``repository`` relative to the receipt's root."""

    repository: str
    tag: str
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest}


@dataclass(frozen=True)
class Receipt:
    root: str
    images: tuple[HeldImage, ...] = ()
    blobs: frozenset[str] = field(default_factory=frozenset)
    bundles: frozenset[str] = field(default_factory=frozenset)
    created: str = ""

    @classmethod
    def build(
        cls,
        root: str,
        images: Iterable[HeldImage] = (),
        blobs: Iterable[str] = (),
        bundles: Iterable[str] = (),
        created: str | None = None,
    ) -> Receipt:
        """A receipt with one image per (repository, tag): the last given wins."""
        by_tag = {(i.repository, i.tag): i for i in images}
        return cls(
            root=root,
            images=tuple(sorted(by_tag.values())),
            blobs=frozenset(blobs),
            bundles=frozenset(bundles),
            created=created if created is not None else utc_now(),
        )

    def merged(
        self,
        images: Iterable[HeldImage] = (),
        blobs: Iterable[str] = (),
        bundles: Iterable[str] = (),
        *,
        root: str | None = None,
    ) -> Receipt:
        """This receipt ∪ what was added (an added (repository, tag) replaces the held one)."""
        return Receipt.build(
            root if root is not None else self.root,
            [*self.images, *images],
            self.blobs | set(blobs),
            self.bundles | set(bundles),
        )

    @property
    def repositories(self) -> frozenset[str]:
        return frozenset(i.repository for i in self.images)

    @property
    def manifests(self) -> frozenset[str]:
        return frozenset(i.digest for i in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECEIPT_FORMAT,
            "created": self.created,
            "root": self.root,
            "images": [i.to_json() for i in sorted(self.images)],
            "blobs": sorted(self.blobs),
            "bundles": sorted(self.bundles),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def same_holdings(self, other: Receipt) -> bool:
        """Equal but for ``created`` (and the root's host, when one omits it)."""
        return (self.images, self.blobs, self.bundles) == (other.images, other.blobs, other.bundles)


def parse_receipt(data: bytes, *, where: str = RECEIPT_FILE) -> Receipt:
    obj = parse_json_object(data, where=where, error=ReceiptError)
    if obj.get("format") != RECEIPT_FORMAT:
        raise ReceiptError(
            f"{where} is not a d8mirror receipt (format {obj.get('format')!r}, expected "
            f"{RECEIPT_FORMAT!r})"
        )
    root, created = obj.get("root"), obj.get("created", "")
    if not isinstance(root, str) or not isinstance(created, str):
        raise ReceiptError(f"{where}: 'root' and 'created' must be strings")
    return Receipt(
        root=root,
        images=tuple(sorted(_image(x, where) for x in _list(obj, "images", where))),
        blobs=frozenset(_digest(x, where) for x in _list(obj, "blobs", where)),
        bundles=frozenset(_string(x, where) for x in _list(obj, "bundles", where)),
        created=created,
    )


def write_receipt(receipt: Receipt, path: Path) -> str:
    """Write ``path`` and ``path.sha256`` atomically; returns the receipt's SHA-256 hex."""
    return write_sealed(path, receipt.to_bytes())


def read_receipt(path: Path) -> tuple[Receipt, str]:
    """(receipt, SHA-256 hex) of a local receipt, verified against its sidecar first."""
    data, hex_digest = read_sealed(path)
    return parse_receipt(data, where=str(path)), hex_digest


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ReceiptError(f"{where}: '{key}' must be a list")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ReceiptError(f"{where}: expected a non-empty string, got {value!r:.80}")
    return value


def _digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_valid_digest(value):
        raise ReceiptError(f"{where}: {value!r:.80} is not a digest (sha256:<64 hex>)")
    return value


def _image(value: Any, where: str) -> HeldImage:
    if not isinstance(value, dict):
        raise ReceiptError(f"{where}: an image must be an object, got {value!r:.80}")
    return HeldImage(
        repository=_string(value.get("repository"), where),
        tag=_string(value.get("tag"), where),
        digest=_digest(value.get("digest"), where),
    )
