"""A deterministic tiny image (Q18): same label ⇒ same bytes ⇒ same digest.

Used for the discovery index tags (R-8.5) and the write check (R-8.6), so that re-pushing is
idempotent. One uncompressed tar layer holding one file of ``payload_size`` bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from d8mirror.errors import NotFoundError
from d8mirror.hashing import sha256_bytes_digest
from d8mirror.mediatypes import OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST
from d8mirror.registry import RegistryClient


@dataclass(frozen=True)
class TinyImage:
    manifest: bytes = field(repr=False)
    blobs: tuple[tuple[str, bytes], ...] = field(repr=False)

    @property
    def digest(self) -> str:
        return sha256_bytes_digest(self.manifest)


def _payload(label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _layer(label: str, size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = _payload(label, size)
        info = tarfile.TarInfo("d8mirror")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build(label: str, payload_size: int = 32) -> TinyImage:
    layer = _layer(label, payload_size)
    layer_digest = sha256_bytes_digest(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"io.deckhouse.d8mirror": label}},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    config_digest = sha256_bytes_digest(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": len(layer)}],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return TinyImage(manifest, ((config_digest, config), (layer_digest, layer)))


def push(client: RegistryClient, repository: str, tag: str, image: TinyImage) -> bool:
    """Push ``image`` as ``repository:tag``; False when the tag already pointed at it."""
    try:
        if client.head_manifest(repository, tag).digest == image.digest:
            return False
    except NotFoundError:
        pass
    with tempfile.TemporaryDirectory(prefix="d8mirror-tiny-") as tmp:
        for digest, data in image.blobs:
            if client.blob_exists(repository, digest):
                continue
            path = Path(tmp) / digest.replace(":", "-")
            path.write_bytes(data)
            client.upload_blob(repository, digest, path, size=len(data))
    client.put_manifest(repository, tag, image.manifest, OCI_MANIFEST)
    return True
