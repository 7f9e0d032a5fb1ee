"""Build bundles by hand exactly as the reference (`d8 mirror pull`) writes them (R-7.1, R-7.5):
layouts ``packages/<name>/``, ``packages/<name>/version/``, ``packages/<name>/extra/<x>/``,
descriptors annotated with ``io.deckhouse.image.short_tag`` and
``org.opencontainers.image.ref.name``, ``index.json`` sorted by ref name with 2-space indent,
packed with :func:`d8mirror.bundle.pack_archive`. Helpers for the push tests (not a test module).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.bundle import TarSource, pack_archive
from d8mirror.errors import NotFoundError
from d8mirror.hashing import sha256_bytes_digest
from d8mirror.mediatypes import (
    ANNOTATION_REF_NAME,
    ANNOTATION_SHORT_TAG,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR_GZIP,
    OCI_MANIFEST,
)
from testbed.registry_server import RegistryServer

SOURCE = "registry.example.com:5000/deckhouse/ee"


def digest_of(data: bytes) -> str:
    return sha256_bytes_digest(data)


def make_layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def pseudo_random(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass
class HandLayout:
    """An OCI layout written by hand (no d8mirror layout code involved)."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> str:
        digest = digest_of(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return digest

    def image_manifest(
        self, layers: Sequence[bytes], label: str, platform: str = "amd64"
    ) -> tuple[bytes, str]:
        config = json.dumps(
            {
                "architecture": platform,
                "os": "linux",
                "config": {"Labels": {"label": label}},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": self.blob(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": OCI_LAYER_TAR_GZIP,
                        "digest": self.blob(layer),
                        "size": len(layer),
                    }
                    for layer in layers
                ],
            },
            indent=3,
        ).encode()  # unusual spacing: push must keep the bytes
        return manifest, self.blob(manifest)

    def add(
        self, digest: str, media_type: str, size: int, short_tag: str | None, ref_name: str | None
    ) -> None:
        annotations = {}
        if ref_name is not None:
            annotations[ANNOTATION_REF_NAME] = ref_name
        if short_tag is not None:
            annotations[ANNOTATION_SHORT_TAG] = short_tag
        entry: dict[str, Any] = {"mediaType": media_type, "size": size, "digest": digest}
        if annotations:
            entry["annotations"] = annotations
        self.entries.append(entry)

    def add_image(
        self, short_tag: str, ref_name: str, layers: Sequence[bytes], label: str | None = None
    ) -> str:
        data, digest = self.image_manifest(layers, label or ref_name)
        self.add(digest, OCI_MANIFEST, len(data), short_tag, ref_name)
        return digest

    def add_index(self, short_tag: str, ref_name: str, layers: Sequence[bytes]) -> str:
        children = [self.image_manifest(layers, ref_name, platform=p) for p in ("amd64", "arm64")]
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": d,
                        "size": len(m),
                        "platform": {"architecture": p, "os": "linux"},
                    }
                    for (m, d), p in zip(children, ("amd64", "arm64"), strict=True)
                ],
                "annotations": {"org.example.top": "kept"},
            },
            indent=1,
        ).encode()
        digest = self.blob(index)
        self.add(digest, OCI_INDEX, len(index), short_tag, ref_name)
        return digest

    def alias(self, digest: str, short_tag: str, ref_name: str) -> None:
        source = next(e for e in self.entries if e["digest"] == digest)
        self.add(digest, source["mediaType"], source["size"], short_tag, ref_name)

    def write(self) -> None:
        ordered = sorted(
            self.entries, key=lambda e: e.get("annotations", {}).get(ANNOTATION_REF_NAME, "")
        )
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ordered}
        (self.path / "index.json").write_text(json.dumps(doc, indent=2))


@dataclass
class PackageSpec:
    name: str
    versions: tuple[str, ...] = ("v1.0.0", "v1.1.0")
    channels: dict[str, str] = field(
        default_factory=lambda: {"stable": "v1.0.0", "alpha": "v1.1.0"}
    )
    extras: dict[str, str] = field(default_factory=lambda: {"scanner": "1.0"})
    layer_size: int = 4096


@dataclass
class Expected:
    """(repository path relative to the push target, tag) → digest."""

    tags: dict[tuple[str, str], str] = field(default_factory=dict)


BASE_LAYER = make_layer({"etc/base": pseudo_random("shared-base", 8192)})


def release_layer(name: str, version: str) -> bytes:
    return make_layer({"version.json": json.dumps({"version": version}).encode()})


def build_package_layouts(
    work: Path, spec: PackageSpec, expected: Expected, *, with_index: bool = False
) -> Path:
    """``work/<name>/`` holding main, ``version/`` and ``extra/<x>/`` layouts."""
    root = work / spec.name
    repo = f"packages/{spec.name}"
    main = HandLayout(root)
    for version in spec.versions:
        layer = make_layer({"app": pseudo_random(f"{spec.name}/{version}", spec.layer_size)})
        ref = f"{SOURCE}/{repo}:{version}"
        digest = (
            main.add_index(version, ref, [BASE_LAYER, layer])
            if with_index and version == spec.versions[-1]
            else main.add_image(version, ref, [BASE_LAYER, layer])
        )
        expected.tags[(repo, version)] = digest
    main.write()
    version_layout = HandLayout(root / "version")
    release: dict[str, str] = {}
    for version in spec.versions:
        ref = f"{SOURCE}/{repo}/version:{version}"
        release[version] = version_layout.add_image(
            version, ref, [release_layer(spec.name, version)]
        )
        expected.tags[(f"{repo}/version", version)] = release[version]
    for channel, version in sorted(spec.channels.items()):
        version_layout.alias(release[version], channel, f"{SOURCE}/{repo}/version:{channel}")
        expected.tags[(f"{repo}/version", channel)] = release[version]
    version_layout.write()
    for extra, tag in sorted(spec.extras.items()):
        layout = HandLayout(root / "extra" / extra)
        layer = make_layer({"bin": pseudo_random(f"{spec.name}/{extra}", 1024)})
        digest = layout.add_image(tag, f"{SOURCE}/{repo}/extra/{extra}:{tag}", [layer])
        expected.tags[(f"{repo}/extra/{extra}", tag)] = digest
        layout.write()
    return root


def pack_package(bundle: Path, root: Path, name: str, *, chunk_size: int = 0) -> Path:
    dest = bundle / f"package-{name}.tar"
    pack_archive(dest, [TarSource(root, f"packages/{name}")], chunk_size=chunk_size)
    return dest


def pack_versions(bundle: Path, roots: dict[str, Path]) -> Path:
    dest = bundle / "package-versions.tar"
    pack_archive(
        dest,
        [
            TarSource(root / "version", f"packages/{name}/version")
            for name, root in sorted(roots.items())
        ],
    )
    return dest


def build_bundle(
    tmp: Path,
    specs: Sequence[PackageSpec],
    *,
    with_index: bool = False,
) -> tuple[Path, Expected]:
    """A bundle dir with ``package-<name>.tar`` per package and ``package-versions.tar``."""
    bundle = tmp / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    expected = Expected()
    roots = {
        s.name: build_package_layouts(tmp / "work", s, expected, with_index=with_index)
        for s in specs
    }
    for name, root in roots.items():
        pack_package(bundle, root, name)
    pack_versions(bundle, roots)
    for name in roots:
        expected.tags[("packages", name)] = ""  # discovery tag: any (deterministic) digest
    return bundle, expected


PIN_CHANNELS = ("alpha", "beta", "early-access", "stable", "rock-solid", "lts")


def build_pinned_package(tmp: Path, name: str, version: str) -> tuple[Path, Expected]:
    """``package-<name>.tar`` as ``pull --include-package <name>@=<version>`` writes it (
    R-4): only ``version`` pulled, no channel image, and after the sort every channel appended
    to ``version/index.json`` as a copy of the pinned version's descriptor."""
    expected = Expected()
    spec = PackageSpec(name, versions=(version,), channels={})
    root = build_package_layouts(tmp / "work", spec, expected)
    index_path = root / "version" / "index.json"
    doc = json.loads(index_path.read_text())
    pinned = next(e for e in doc["manifests"] if e["annotations"][ANNOTATION_SHORT_TAG] == version)
    ref = pinned["annotations"][ANNOTATION_REF_NAME]
    for channel in PIN_CHANNELS:
        doc["manifests"].append(
            {
                **pinned,
                "annotations": {
                    ANNOTATION_REF_NAME: ref.rsplit(":", 1)[0] + ":" + channel,
                    ANNOTATION_SHORT_TAG: channel,
                },
            }
        )
        expected.tags[(f"packages/{name}/version", channel)] = pinned["digest"]
    index_path.write_text(json.dumps(doc, indent=2))
    bundle = tmp / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    return pack_package(bundle, root, name), expected


def damage_member(src: Path, dst: Path, suffix: str) -> None:
    """Copy the tar with one byte of the member ending in ``suffix`` flipped (a layer whose
    bytes do not hash to its digest: the registry refuses its upload, so its layout fails; a
    missing layer would be refused before any upload)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(suffix):
                data = bytes([data[0] ^ 1]) + data[1:]
            tout.addfile(member, io.BytesIO(data))


def digest_or_none(server: RegistryServer, repo: str, tag: str) -> str | None:
    """What ``repo:tag`` resolves to in ``server`` now (None: no such tag)."""
    with server.client() as client:
        try:
            return client.head_manifest(repo, tag).digest
        except NotFoundError:
            return None
