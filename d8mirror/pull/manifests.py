"""Manifests read on pull, checked before anything they name is fetched.

A source registry is not trusted to serve well-formed manifests: a JSON list, a descriptor
whose ``size`` is ``"abc"``, a ``config`` that is a string, a digest that is no digest, a layer
declared with no size or size 0 (which would be downloaded without a bound), an index chain
without end. Each is an :class:`~d8mirror.errors.InvalidManifestError` naming the image,
never retried (the same bytes come back). An index is flattened to its linux/amd64 image as
go-containerregistry does (a child without a platform counts as linux/amd64); an index without
one is a :class:`~d8mirror.errors.PlatformNotFoundError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from d8mirror.errors import InvalidManifestError, PlatformNotFoundError
from d8mirror.mediatypes import INDEX_TYPES, OCI_INDEX
from d8mirror.reference import is_valid_digest

#: Index levels followed from the image asked for, as push allows (d8mirror.push.manifests).
MAX_INDEX_DEPTH = 4
#: The only blob that may declare size 0.
EMPTY_BLOB_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class PulledManifest:
    """What a manifest needs: its children (index) or its config and layers (image)."""

    media_type: str
    children: tuple[tuple[str, str, str], ...] = ()  # (digest, os, architecture)
    config: tuple[str, int] | None = None
    layers: tuple[tuple[str, int], ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def embedded_media_type(data: bytes) -> str | None:
    """The ``mediaType`` field of a stored manifest; None when it is a JSON object without one
    (the registry's Content-Type is needed: fetch it again); ``""`` when it is no JSON object
    at all (:func:`parse_manifest` refuses it whatever its type)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(doc, dict):
        return ""
    value = doc.get("mediaType")
    return value if isinstance(value, str) and value else None


def parse_manifest(data: bytes, media_type: str, where: str) -> PulledManifest:
    """Check ``data`` (served as ``media_type``) and say what it needs; ``where`` names it
    (``repository@digest``) in errors."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidManifestError(f"manifest {where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidManifestError(
            f"manifest {where} is a JSON {type(doc).__name__}, not an "
            "object: the source serves a broken image"
        )
    if media_type in INDEX_TYPES or "manifests" in doc:
        kind = media_type if media_type in INDEX_TYPES else OCI_INDEX
        return PulledManifest(kind, children=_children(doc.get("manifests"), where))
    config = doc.get("config")
    return PulledManifest(
        media_type,
        config=None if config is None else _blob(config, where, "config"),
        layers=tuple(
            _blob(layer, where, f"layer {i}")
            for i, layer in enumerate(_list(doc.get("layers"), where, "layers"))
        ),
    )


def amd64_child(manifest: PulledManifest, where: str) -> str:
    """The digest of the index's linux/amd64 image (R-6.3)."""
    for digest, os_name, architecture in manifest.children:
        if os_name == "linux" and architecture == "amd64":
            return digest
    found = ", ".join(sorted({f"{o or '?'}/{a or '?'}" for _, o, a in manifest.children}))
    raise PlatformNotFoundError(
        f"image index {where} has no linux/amd64 image (it has {found}); d8mirror mirrors "
        "linux/amd64 only, as d8 does: exclude this version or ask its publisher for one"
    )


def _list(value: Any, where: str, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidManifestError(f"manifest {where}: {what} is not a JSON array")
    return value


def _digest(descriptor: Any, where: str, what: str) -> str:
    if not isinstance(descriptor, dict):
        raise InvalidManifestError(f"manifest {where}: {what} is not a descriptor object")
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not is_valid_digest(digest):
        raise InvalidManifestError(
            f"manifest {where}: {what} has an invalid digest "
            f"{str(digest)[:80]!r} (sha256:<64 hex> expected)"
        )
    return digest


def _blob(descriptor: Any, where: str, what: str) -> tuple[str, int]:
    digest = _digest(descriptor, where, what)
    size = descriptor.get("size")
    if size is None:
        raise InvalidManifestError(
            f"manifest {where}: {what} {digest} declares no size; "
            "refusing to download a blob without a bound"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidManifestError(
            f"manifest {where}: {what} {digest} has an invalid size {json.dumps(size)[:40]}"
        )
    if size == 0 and digest != EMPTY_BLOB_DIGEST:
        raise InvalidManifestError(
            f"manifest {where}: {what} {digest} declares size 0, but "
            "only the empty blob has no bytes; refusing to download it "
            "without a bound"
        )
    return digest, size


def _children(value: Any, where: str) -> tuple[tuple[str, str, str], ...]:
    children = []
    for i, child in enumerate(_list(value, where, "manifests")):
        digest = _digest(child, where, f"manifest {i}")
        platform = child.get("platform")
        if platform is None:  # go-containerregistry: no platform means linux/amd64
            platform = {"os": "linux", "architecture": "amd64"}
        if not isinstance(platform, dict):
            raise InvalidManifestError(
                f"manifest {where}: manifest {i} has a platform that is not an object"
            )
        os_name, architecture = platform.get("os"), platform.get("architecture")
        children.append(
            (
                digest,
                os_name if isinstance(os_name, str) else "",
                architecture if isinstance(architecture, str) else "",
            )
        )
    if not children:
        raise InvalidManifestError(f"image index {where} has no manifests")
    return tuple(children)
