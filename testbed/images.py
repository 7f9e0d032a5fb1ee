"""Deterministic OCI / Docker images built on disk, for seeding test registries.

Same input => same bytes => same digests: tar entries are sorted with fixed mtime, owner and
mode; gzip has mtime 0 and no file name; JSON is serialised canonically. Layers stream to disk
(hashed on the way, compressed and uncompressed), so a 1 GiB pseudo-random file never sits in
memory. Built blobs are cached in the builder's work dir, keyed by what they were built from.

    builder = ImageBuilder(workdir)
    image = builder.image([{"version.json": b'{"version":"v1.0.0"}'},
                           {"big.bin": RandomFile(size=1 << 30, seed=7)}])
    image.manifest, image.media_type, image.digest, image.blobs
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from d8mirror.files import write_atomic
from d8mirror.hashing import sha256_bytes_digest, sha256_bytes_hex
from d8mirror.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_TAR_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR_GZIP,
    OCI_MANIFEST,
)

PIECE_SIZE = 1 << 20
#: Every tar entry gets this mtime (2024-01-01T00:00:00Z).
FIXED_MTIME = 1_704_067_200


@dataclass(frozen=True)
class RandomFile:
    """A file of ``size`` pseudo-random bytes derived from ``seed``, generated in 1 MiB pieces."""

    size: int
    seed: int | str


FileContent = bytes | RandomFile


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"


@dataclass(frozen=True)
class Blob:
    """A content-addressed file on disk."""

    digest: str
    size: int
    path: Path
    media_type: str


@dataclass(frozen=True)
class BuiltImage:
    """A manifest (bytes exactly as pushed) with the blobs and child manifests it needs."""

    manifest: bytes = field(repr=False)
    media_type: str
    digest: str
    blobs: tuple[Blob, ...] = ()
    children: tuple[BuiltImage, ...] = ()

    @property
    def size(self) -> int:
        return len(self.manifest)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def random_pieces(spec: RandomFile) -> io.BufferedReader:
    """A readable stream of ``spec``'s bytes; memory stays at about two 1 MiB pieces."""
    return io.BufferedReader(_RandomStream(spec), buffer_size=PIECE_SIZE)


class _RandomStream(io.RawIOBase):
    def __init__(self, spec: RandomFile) -> None:
        self._random = random.Random(f"d8mirror-testbed:{spec.seed}")
        self._left = spec.size
        self._piece = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._offset == len(self._piece):
            if self._left == 0:
                return 0
            length = min(PIECE_SIZE, self._left)
            self._piece = self._random.randbytes(length)
            self._left -= length
            self._offset = 0
        count = min(len(view), len(self._piece) - self._offset)
        view[:count] = self._piece[self._offset : self._offset + count]
        self._offset += count
        return count


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _HashingWriter(io.RawIOBase):
    """Forwards writes to ``sink`` while hashing and counting them."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.hash.update(chunk)
        self.size += len(chunk)
        self._sink.write(chunk)
        return len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _tar_info(path: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _dir_info(path: str) -> tarfile.TarInfo:
    info = _tar_info(path, 0)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _parent_dirs(paths: Sequence[str]) -> list[str]:
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def write_layer(
    files: Mapping[str, FileContent], out: BinaryIO, compresslevel: int = 1
) -> tuple[str, int, str]:
    """Write ``files`` as a deterministic gzip tar into ``out``.

    Returns (compressed digest, compressed size, uncompressed diff_id).
    """
    compressed = _HashingWriter(out)
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=compresslevel
    ) as gz:
        uncompressed = _HashingWriter(gz)
        with tarfile.open(
            fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT, bufsize=PIECE_SIZE
        ) as tar:
            tar.copybufsize = PIECE_SIZE  # type: ignore[attr-defined]  # stdlib, untyped
            for directory in _parent_dirs(list(files)):
                tar.addfile(_dir_info(directory))
            for path in sorted(files):
                content = files[path]
                if isinstance(content, RandomFile):
                    with random_pieces(content) as stream:
                        tar.addfile(_tar_info(path, content.size), stream)
                else:
                    tar.addfile(_tar_info(path, len(content)), io.BytesIO(content))
    return compressed.digest, compressed.size, uncompressed.digest


def _content_key(files: Mapping[str, FileContent], compresslevel: int) -> str:
    """A stable key for a layer's inputs (bytes hashed, random specs described)."""
    described: dict[str, Any] = {}
    for path, content in files.items():
        if isinstance(content, RandomFile):
            described[path] = {"random": [content.size, str(content.seed)]}
        else:
            described[path] = {"sha256": sha256_bytes_hex(content)}
    return sha256_bytes_hex(
        canonical_json({"files": described, "level": compresslevel, "format": 1})
    )


@dataclass(frozen=True)
class _Layer:
    blob: Blob
    diff_id: str


class ImageBuilder:
    """Builds blobs and manifests under ``workdir`` (``blobs/sha256/<hex>``), with a cache."""

    def __init__(self, workdir: Path, *, compresslevel: int = 1) -> None:
        self.workdir = Path(workdir)
        self.blob_dir = self.workdir / "blobs" / "sha256"
        self.cache_dir = self.workdir / "layer-cache"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.compresslevel = compresslevel

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest.split(":", 1)[1]

    def bytes_blob(self, data: bytes, media_type: str) -> Blob:
        """Store small ``data`` (configs) as a blob."""
        digest = sha256_bytes_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomically(path, data)
        return Blob(digest, len(data), path, media_type)

    def layer(
        self, files: Mapping[str, FileContent], media_type: str = OCI_LAYER_TAR_GZIP
    ) -> _Layer:
        """A gzip tar layer of ``files`` (cached: the same files are built once)."""
        key = _content_key(files, self.compresslevel)
        record = self.cache_dir / f"{key}.json"
        if record.exists():
            cached = json.loads(record.read_text())
            path = self.blob_path(cached["digest"])
            if path.exists() and path.stat().st_size == cached["size"]:
                return _Layer(
                    Blob(cached["digest"], cached["size"], path, media_type), cached["diff_id"]
                )
        fd, temp_name = tempfile.mkstemp(dir=self.blob_dir, prefix=".layer-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size, diff_id = write_layer(files, out, self.compresslevel)
            path = self.blob_path(digest)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        self._write_atomically(
            record, canonical_json({"digest": digest, "size": size, "diff_id": diff_id})
        )
        return _Layer(Blob(digest, size, path, media_type), diff_id)

    def image(
        self,
        layers: Sequence[Mapping[str, FileContent]],
        *,
        platform: Platform = Platform(),
        labels: Mapping[str, str] | None = None,
        docker: bool = False,
        annotations: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        """An image of ``layers`` (bottom first): OCI manifest, or Docker v2s2 if ``docker``."""
        layer_type = DOCKER_LAYER_TAR_GZIP if docker else OCI_LAYER_TAR_GZIP
        built = [self.layer(files, layer_type) for files in layers]
        config: dict[str, Any] = {
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Labels": dict(labels or {})},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in built]},
        }
        config_blob = self.bytes_blob(
            canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG
        )
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": _descriptor(config_blob),
            "layers": [_descriptor(layer.blob) for layer in built],
        }
        if annotations and not docker:
            manifest["annotations"] = dict(annotations)
        data = canonical_json(manifest)
        blobs = (config_blob, *(layer.blob for layer in built))
        return BuiltImage(data, media_type, sha256_bytes_digest(data), _unique(blobs))

    def index(self, children: Sequence[tuple[Platform, BuiltImage]]) -> BuiltImage:
        """An OCI index over platform-specific ``children`` (pushed before the index)."""
        manifests = [
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": child.size,
                "platform": {"architecture": platform.architecture, "os": platform.os},
            }
            for platform, child in children
        ]
        data = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        return BuiltImage(
            data, OCI_INDEX, sha256_bytes_digest(data), (), tuple(child for _, child in children)
        )

    def multi_arch(
        self,
        layers: Sequence[Mapping[str, FileContent]],
        platforms: Sequence[Platform] = (Platform("linux", "amd64"), Platform("linux", "arm64")),
        labels: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        """An OCI index whose children share ``layers`` and differ by platform config."""
        children = [(p, self.image(layers, platform=p, labels=labels)) for p in platforms]
        return self.index(children)

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        write_atomic(path, data)


def _descriptor(blob: Blob) -> dict[str, Any]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def _unique(blobs: Sequence[Blob]) -> tuple[Blob, ...]:
    seen: dict[str, Blob] = {}
    for blob in blobs:
        seen.setdefault(blob.digest, blob)
    return tuple(seen.values())
