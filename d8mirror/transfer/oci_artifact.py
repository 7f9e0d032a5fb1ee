"""Bundles as an ORAS-style OCI artifact in an intermediate registry.

Shape (what ``oras push`` writes, so ``oras pull`` restores the files by name)::

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.deckhouse.d8mirror.bundle.v1",
     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": <sha256 of {}>,
                "size": 2},
     "layers": [{"mediaType": …, "digest": "sha256:…", "size": …,
                 "annotations": {"org.opencontainers.image.title": "<file name>"}}, …,
                {… "title": "d8mirror-transfer.json"}]}

One layer per file, in manifest order, and the transfer manifest as the last layer. The
functions here move one file (or commit the artifact); the flows of ``flows/transfer.py`` fan
out over the files. Blobs go
through d8mirror's own :class:`~d8mirror.registry.RegistryClient` (``upload_blob`` streams
from disk: POST, then PATCH pieces of ``chunk_size``, then PUT), not through oras-py, whose
monolithic upload reads a whole blob into memory. A blob the registry already has is skipped
(content addressed). The manifest is PUT last, so the tag appears only when every blob is there;
the manifest bytes are deterministic, so the same bundle always gets the same digest.

Download: the artifact manifest, then the transfer-manifest layer (none: refuse); every layer
must match its manifest entry (name, digest, size) and exist (HEAD) before any file is fetched.
Files stream through ``<name>.partial`` with Range resume and digest check (``fetch_blob``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from d8mirror.errors import ManifestNotFoundError, ProtocolError
from d8mirror.files import partial_path
from d8mirror.hashing import sha256_bytes_digest, sha256_bytes_hex
from d8mirror.mediatypes import ANNOTATION_TITLE, OCI_EMPTY, OCI_MANIFEST
from d8mirror.names import ARCHIVE_FILE_SUFFIXES, SIDECAR_SUFFIXES
from d8mirror.registry import RegistryClient

from .errors import IncompleteUploadError, TransferError, TransferIntegrityError
from .manifest import (
    MANIFEST_NAME,
    FileEntry,
    TransferManifest,
    is_present,
    is_safe_name,
)
from .results import FileResult
from .urls import OciUrl

ARTIFACT_TYPE = "application/vnd.deckhouse.d8mirror.bundle.v1"
ARCHIVE_TYPE = "application/vnd.deckhouse.d8mirror.archive.v1.tar"
TEXT_TYPE = "text/plain"
JSON_TYPE = "application/json"
OCTETS_TYPE = "application/octet-stream"
EMPTY_CONFIG = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
DEFAULT_CHUNK = 64 << 20
_MAX_TRANSFER_MANIFEST = 16 << 20


def media_type_for(name: str) -> str:
    if name.endswith(ARCHIVE_FILE_SUFFIXES):
        return ARCHIVE_TYPE
    if name.endswith(SIDECAR_SUFFIXES):
        return TEXT_TYPE
    if name.endswith(".json"):
        return JSON_TYPE
    return OCTETS_TYPE


def _layer(name: str, digest: str, size: int) -> dict[str, Any]:
    return {
        "mediaType": media_type_for(name),
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_TITLE: name},
    }


def artifact_manifest(manifest: TransferManifest, manifest_blob: FileEntry) -> bytes:
    """The OCI manifest bytes of an artifact holding ``manifest``'s files (deterministic)."""
    layers = [_layer(f.name, f.digest, f.size) for f in manifest.files]
    layers.append(_layer(MANIFEST_NAME, manifest_blob.digest, manifest_blob.size))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": len(EMPTY_CONFIG)},
        "layers": layers,
    }
    return json.dumps(doc, indent=2).encode()


# -- upload --------------------------------------------------------------------------------------
def upload_file(
    client: RegistryClient,
    url: OciUrl,
    path: Path,
    entry: FileEntry,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Upload one file as a blob unless the registry has it already (``on_progress(n)``
    per chunk sent)."""
    started = time.monotonic()
    if client.blob_exists(url.repository, entry.digest):
        return FileResult(entry.name, entry.size, "skipped", time.monotonic() - started)
    client.upload_blob(
        url.repository,
        entry.digest,
        path,
        size=entry.size,
        chunk_size=chunk_size,
        on_progress=on_progress,
    )
    return FileResult(entry.name, entry.size, "uploaded", time.monotonic() - started)


def _upload_bytes(client: RegistryClient, url: OciUrl, data: bytes, work_dir: Path) -> None:
    entry_path = work_dir / "blob"
    entry_path.write_bytes(data)
    digest = sha256_bytes_digest(data)
    if not client.blob_exists(url.repository, digest):
        client.upload_blob(url.repository, digest, entry_path, size=len(data))


def commit(client: RegistryClient, url: OciUrl, manifest: TransferManifest) -> str:
    """Upload the transfer manifest and the empty config, PUT the artifact manifest under the
    tag (last), check the tag resolves to it; returns the artifact digest."""
    data = manifest.to_bytes()
    blob = FileEntry(MANIFEST_NAME, len(data), sha256_bytes_hex(data))
    with tempfile.TemporaryDirectory(prefix="d8mirror-artifact-") as work:
        _upload_bytes(client, url, data, Path(work))
        _upload_bytes(client, url, EMPTY_CONFIG, Path(work))
    body = artifact_manifest(manifest, blob)
    digest = client.put_manifest(url.repository, url.tag, body, OCI_MANIFEST)
    resolved = client.head_manifest(url.repository, url.tag).digest
    if resolved != digest:
        raise TransferIntegrityError(
            f"{url} resolves to {resolved}, not the {digest} just "
            "pushed; is another upload writing the same tag?",
            expected=digest,
            actual=resolved,
        )
    return digest


# -- download ------------------------------------------------------------------------------------
def _titled_layers(doc: dict[str, Any], where: str) -> dict[str, FileEntry]:
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ProtocolError(f"{where} is not an OCI artifact manifest (no layers)")
    out: dict[str, FileEntry] = {}
    for layer in layers:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        title = annotations.get(ANNOTATION_TITLE) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(title, str) or not is_safe_name(title):
            raise TransferError(f"{where}: a layer has no safe {ANNOTATION_TITLE} ({title!r:.80})")
        if (
            not isinstance(digest, str)
            or not digest.startswith("sha256:")
            or not isinstance(size, int)
        ):
            raise TransferError(f"{where}: layer {title} has a bad digest or size")
        out[title] = FileEntry(title, size, digest.removeprefix("sha256:"))
    return out


def read_artifact(client: RegistryClient, url: OciUrl) -> TransferManifest:
    """The transfer manifest of the artifact at ``url``, checked against the artifact's layers
    (IncompleteUploadError when the tag, the manifest layer or a listed blob is missing)."""
    try:
        doc = client.get_manifest(url.repository, url.tag).json()
    except ManifestNotFoundError as exc:
        raise IncompleteUploadError(
            f"no artifact at {url}: the upload did not finish or the "
            "tag is wrong; run the upload again"
        ) from exc
    layers = _titled_layers(doc, str(url))
    blob = layers.pop(MANIFEST_NAME, None)
    if blob is None:
        raise IncompleteUploadError(
            f"{url} has no {MANIFEST_NAME} layer: not a complete "
            "d8mirror bundle; run the upload again"
        )
    with client.open_blob(url.repository, blob.digest) as reader:
        data = reader.read(_MAX_TRANSFER_MANIFEST + 1)
    manifest = TransferManifest.from_bytes(data, f"{url} {MANIFEST_NAME}")
    _check_layers(url, manifest, layers)
    missing = [f.name for f in manifest.files if not client.blob_exists(url.repository, f.digest)]
    if missing:
        raise IncompleteUploadError(
            f"{url} is incomplete: {len(missing)} blob(s) are missing "
            f"({', '.join(missing[:5])}); run the upload again"
        )
    return manifest


def _check_layers(url: OciUrl, manifest: TransferManifest, layers: dict[str, FileEntry]) -> None:
    listed = {f.name: f for f in manifest.files}
    if set(listed) != set(layers):
        raise IncompleteUploadError(
            f"{url}: layers and {MANIFEST_NAME} disagree (only in manifest: "
            f"{sorted(set(listed) - set(layers))[:5]}, only as layers: "
            f"{sorted(set(layers) - set(listed))[:5]})"
        )
    for name, entry in listed.items():
        layer = layers[name]
        if (layer.sha256, layer.size) != (entry.sha256, entry.size):
            raise TransferIntegrityError(
                f"{url}: layer {name} does not match {MANIFEST_NAME}",
                expected=entry.digest,
                actual=layer.digest,
            )


def download_file(
    client: RegistryClient,
    url: OciUrl,
    entry: FileEntry,
    dest_dir: Path,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Fetch one layer into ``dest_dir/<name>`` (via ``.partial``, resumed, digest-checked;
    ``on_progress(n)`` per chunk received)."""
    started = time.monotonic()
    final = dest_dir / entry.name
    if is_present(final, entry):
        return FileResult(entry.name, entry.size, "present", time.monotonic() - started)
    resumed = partial_path(final).is_file()
    client.fetch_blob(url.repository, entry.digest, final, size=entry.size, on_progress=on_progress)
    return FileResult(
        entry.name, entry.size, "resumed" if resumed else "downloaded", time.monotonic() - started
    )
