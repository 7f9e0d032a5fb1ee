"""Walk a manifest in an OCI layout: which blobs and child manifests it needs in the target.

Manifests are read from the layout's blob files, or from the archive when the unpack left them
there (:class:`~d8mirror.push.blobsource.LayoutBlobs`: only blobs above 1 MiB stay in archives,
so that takes a manifest of more than 1 MiB, below the 4 MiB cap)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.errors import IntegrityError, LayoutError
from d8mirror.hashing import sha256_bytes_digest
from d8mirror.mediatypes import INDEX_TYPES, MAX_MANIFEST_BYTES
from d8mirror.push.blobsource import LayoutBlobs


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int


@dataclass(frozen=True)
class ManifestNode:
    """A manifest to PUT (exact bytes), its blobs, and (for an index) its children."""

    digest: str
    media_type: str
    data: bytes = field(repr=False)
    blobs: tuple[BlobRef, ...]
    children: tuple[ManifestNode, ...]

    def all_blobs(self) -> list[BlobRef]:
        out = list(self.blobs)
        for child in self.children:
            out.extend(child.all_blobs())
        return out

    def put_order(self) -> list[ManifestNode]:
        """Children first (depth-first), the node itself last."""
        out: list[ManifestNode] = []
        for child in self.children:
            out.extend(child.put_order())
        out.append(self)
        return out


def read_manifest(
    blobs: LayoutBlobs, digest: str, media_type: str | None, *, depth: int = 0
) -> ManifestNode:
    """Load ``digest`` from a layout's ``blobs`` with everything it references (children
    first)."""
    where = blobs.layout.path
    if depth > 4:
        raise LayoutError(f"layout {where}: manifest {digest} nests indexes too deeply")
    data = blobs.read(digest, limit=MAX_MANIFEST_BYTES)
    actual = sha256_bytes_digest(data)
    if actual != digest:  # never PUT (under a real tag) bytes that are not the digest's
        raise IntegrityError(
            f"layout {where}: manifest {digest} does not match its digest "
            f"(content hashes to {actual}): refusing to push it; copy the "
            "bundle again"
        )
    doc = _json_object(data, where, digest)
    kind = media_type or str(doc.get("mediaType") or "")
    if kind in INDEX_TYPES or "manifests" in doc:
        children = tuple(
            read_manifest(blobs, d.digest, d.media_type, depth=depth + 1)
            for d in _descriptors(doc.get("manifests"), where, digest)
        )
        return ManifestNode(digest, kind, data, (), children)
    descriptors = list(_descriptors([doc["config"]] if "config" in doc else [], where, digest))
    descriptors += _descriptors(doc.get("layers"), where, digest)
    refs = tuple(BlobRef(d.digest, d.size) for d in descriptors)
    return ManifestNode(digest, kind, data, refs, ())


@dataclass(frozen=True)
class _Desc:
    digest: str
    size: int
    media_type: str | None


def _descriptors(items: Any, layout: Path, owner: str) -> list[_Desc]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise LayoutError(f"layout {layout}: manifest {owner} has a malformed descriptor list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise LayoutError(f"layout {layout}: manifest {owner} has a malformed descriptor")
        size = item.get("size", -1)
        media = item.get("mediaType")
        out.append(
            _Desc(
                item["digest"],
                size if isinstance(size, int) else -1,
                media if isinstance(media, str) else None,
            )
        )
    return out


def _json_object(data: bytes, layout: Path, digest: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayoutError(f"layout {layout}: manifest {digest} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise LayoutError(f"layout {layout}: manifest {digest} is not a JSON object")
    return doc
