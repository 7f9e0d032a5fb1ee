"""Seed a registry with Deckhouse-shaped package content (R-1).

For a root ``<root>`` (e.g. ``deckhouse/ee``) and every package ``<p>`` of a :class:`SeedSpec`:

    <root>/packages:<p>                         catalog tag (tiny deterministic image)
    <root>/packages/<p>:<vX.Y.Z>                main images: extra_images.json, images_digests.json,
                                                a base layer shared by all packages
    <root>/packages/<p>@sha256:<hex>            internal images, pushed by digest only
    <root>/packages/<p>/version:<channel>       channel images with version.json
    <root>/packages/<p>/version:<vX.Y.Z>        release images with version.json
    <root>/packages/<p>/extra/<x>:<tag>         extra images
    <root>/packages/<p>:<vX.Y.Z>.att            VEX of a main tag
    <root>/packages/<p>:sha256-<hex>.att        VEX of an internal image
    <root>/packages/<p>:<extra-tag>.att         VEX of an extra image (in the MAIN repo, R-1.4)

Same spec => same digests. CLI: ``python -m testbed.seed --registry HOST:PORT``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from d8mirror.names import EXTRA, PACKAGES, VERSION
from testbed.images import (
    BuiltImage,
    FileContent,
    ImageBuilder,
    RandomFile,
    canonical_json,
)

if TYPE_CHECKING:
    from d8mirror.registry import RegistryClient

DEFAULT_CHANNELS = ("alpha", "beta", "early-access", "stable", "rock-solid")
ManifestFormat = Literal["oci", "docker", "index"]


@dataclass(frozen=True)
class ExtraSpec:
    """An extra image ``<p>/extra/<name>:<tag>``; an int tag is written as a JSON number."""

    name: str
    tag: str | int

    @property
    def tag_text(self) -> str:
        return str(self.tag)


@dataclass(frozen=True)
class PackageSpec:
    """One package. ``channels`` maps channel name -> version (need not be in ``versions``)."""

    name: str
    versions: tuple[str, ...]
    channels: Mapping[str, str] = field(default_factory=dict)
    extras: tuple[ExtraSpec, ...] = ()
    #: internal images per version; image 0 is shared by every version of the package
    internal_images: int = 2
    vex_versions: tuple[str, ...] = ()
    vex_internal: bool = False
    vex_extras: tuple[str, ...] = ()
    manifest_format: ManifestFormat = "oci"
    release_images: bool = True


@dataclass(frozen=True)
class SeedSpec:
    """What to seed. Sizes are bytes of pseudo-random payload (they set the corpus size)."""

    packages: tuple[PackageSpec, ...]
    #: payload bytes per main image, split between the shared base layer and its own layer
    payload_size: int = 64 << 10
    #: fraction of ``payload_size`` in the base layer shared by every package
    shared_layer_fraction: float = 0.5
    extra_payload_size: int = 16 << 10
    catalog: bool = True
    seed: int = 0

    @property
    def base_layer_size(self) -> int:
        return round(self.payload_size * self.shared_layer_fraction)

    @property
    def own_layer_size(self) -> int:
        return self.payload_size - self.base_layer_size


@dataclass(frozen=True)
class SeededContent:
    """Every reference pushed (``repo:tag`` or ``repo@digest``, no host) -> manifest digest."""

    registry: str
    root: str
    refs: Mapping[str, str]
    internal_digests: Mapping[str, tuple[str, ...]]

    def digest(self, ref: str) -> str:
        return self.refs[ref]

    def tags(self, repository: str) -> list[str]:
        """The tags seeded in ``repository``, sorted."""
        prefix = f"{repository}:"
        return sorted(ref[len(prefix) :] for ref in self.refs if ref.startswith(prefix))

    @property
    def repositories(self) -> list[str]:
        names = {ref.split("@", 1)[0] if "@" in ref else ref.rsplit(":", 1)[0] for ref in self.refs}
        return sorted(names)


def demo_spec() -> SeedSpec:
    """A small corpus (a few MB): 3 packages, channels incl. lts, extras, VEX, internal images."""
    console = PackageSpec(
        name="console",
        versions=("v1.0.0", "v1.0.1", "v1.1.0", "v1.2.0"),
        channels={
            "alpha": "v1.2.0",
            "beta": "v1.2.0",
            "early-access": "v1.1.0",
            "stable": "v1.1.0",
            "rock-solid": "v1.0.1",
        },
        extras=(ExtraSpec("scanner", "v1.2.3"), ExtraSpec("enforcer", 3)),
        vex_versions=("v1.1.0",),
        vex_internal=True,
        vex_extras=("scanner",),
    )
    code = PackageSpec(
        name="code",
        versions=("v1.6.0", "v1.6.1", "v1.6.2", "v1.7.0"),
        channels={
            "alpha": "v1.7.0",
            "beta": "v1.7.0",
            "early-access": "v1.7.0",
            "stable": "v1.6.2",
            "rock-solid": "v1.6.2",
            "lts": "v1.6.1",
        },
        internal_images=1,
        manifest_format="docker",
    )
    stronghold = PackageSpec(
        name="stronghold",
        versions=("v0.4.0", "v0.5.0"),
        channels={"alpha": "v0.5.0", "stable": "v0.4.0"},
        extras=(ExtraSpec("unsealer", "v0.1.0"),),
        vex_versions=("v0.5.0",),
        manifest_format="index",
    )
    return SeedSpec(packages=(console, code, stronghold), payload_size=512 << 10)


class _Pusher:
    """Pushes built images, uploading each (repository, blob) at most once."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._present: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def push(self, repository: str, reference: str, image: BuiltImage) -> str:
        for child in image.children:
            self.push(repository, child.digest, child)
        for blob in image.blobs:
            key = (repository, blob.digest)
            with self._lock:
                if key in self._present:
                    continue
            if not self.client.blob_exists(repository, blob.digest):
                self.client.upload_blob(repository, blob.digest, blob.path, size=blob.size)
            with self._lock:
                self._present.add(key)
        return self.client.put_manifest(repository, reference, image.manifest, image.media_type)


class _PackageSeeder:
    """Builds and pushes one package; records refs into ``refs``."""

    def __init__(
        self,
        spec: SeedSpec,
        package: PackageSpec,
        root: str,
        builder: ImageBuilder,
        pusher: _Pusher,
        refs: dict[str, str],
    ) -> None:
        self.spec, self.package, self.builder, self.pusher = spec, package, builder, pusher
        self.refs = refs
        self.repo = f"{root}/{PACKAGES}/{package.name}"
        self.internal: list[str] = []

    def _push(self, repository: str, reference: str, image: BuiltImage) -> str:
        digest = self.pusher.push(repository, reference, image)
        separator = "@" if reference.startswith("sha256:") else ":"
        self.refs[f"{repository}{separator}{reference}"] = digest
        return digest

    def _seed_key(self, *parts: str) -> str:
        return ":".join([str(self.spec.seed), self.package.name, *parts])

    def seed(self) -> None:
        for version in self.package.versions:
            self._seed_version(version)
        self._seed_channels()
        self._seed_extras()
        self._seed_vex()

    def _seed_version(self, version: str) -> None:
        digests = [self._seed_internal(version, i) for i in range(self.package.internal_images)]
        own: dict[str, FileContent] = {
            "version": version.encode(),
            f"payload/{self.package.name}.bin": RandomFile(
                self.spec.own_layer_size, self._seed_key(version)
            ),
        }
        if self.package.extras:
            own["extra_images.json"] = canonical_json(
                {extra.name: extra.tag for extra in self.package.extras}
            )
        if digests:
            own["images_digests.json"] = canonical_json(
                {"internal": {f"image-{i}": d for i, d in enumerate(digests)}}
            )
        layers: list[dict[str, FileContent]] = []
        if self.spec.base_layer_size:
            layers.append(
                {
                    "base/payload.bin": RandomFile(
                        self.spec.base_layer_size, f"{self.spec.seed}:base"
                    )
                }
            )
        layers.append(own)
        labels = {"org.opencontainers.image.version": version}
        image = self._build(layers, labels)
        self._push(self.repo, version, image)

    def _build(self, layers: list[dict[str, FileContent]], labels: dict[str, str]) -> BuiltImage:
        if self.package.manifest_format == "index":
            return self.builder.multi_arch(layers, labels=labels)
        return self.builder.image(
            layers, labels=labels, docker=self.package.manifest_format == "docker"
        )

    def _seed_internal(self, version: str, index: int) -> str:
        key = (
            self._seed_key("internal", str(index))
            if index == 0
            else self._seed_key(version, "internal", str(index))
        )
        image = self.builder.image([{f"internal/image-{index}.txt": key.encode()}])
        digest = self._push(self.repo, image.digest, image)
        if digest not in self.internal:
            self.internal.append(digest)
        return digest

    def _version_image(self, version: str) -> BuiltImage:
        return self.builder.image(
            [{"version.json": canonical_json({"version": version})}],
            labels={"org.opencontainers.image.version": version},
        )

    def _seed_channels(self) -> None:
        release_repo = f"{self.repo}/{VERSION}"
        for channel, version in sorted(self.package.channels.items()):
            self._push(release_repo, channel, self._version_image(version))
        if self.package.release_images:
            for version in self.package.versions:
                self._push(release_repo, version, self._version_image(version))

    def _seed_extras(self) -> None:
        for extra in self.package.extras:
            payload = RandomFile(
                self.spec.extra_payload_size, self._seed_key("extra", extra.name, extra.tag_text)
            )
            image = self.builder.image([{f"extra/{extra.name}.bin": payload}])
            self._push(f"{self.repo}/{EXTRA}/{extra.name}", extra.tag_text, image)

    def _vex_image(self, subject: str) -> BuiltImage:
        return self.builder.image([{"vex.json": canonical_json({"subject": subject})}])

    def _seed_vex(self) -> None:
        for version in self.package.vex_versions:
            self._push(self.repo, f"{version}.att", self._vex_image(f"{self.repo}:{version}"))
        if self.package.vex_internal:
            for digest in self.internal:
                tag = "sha256-" + digest.split(":", 1)[1] + ".att"
                self._push(self.repo, tag, self._vex_image(f"{self.repo}@{digest}"))
        for extra in self.package.extras:
            if extra.name in self.package.vex_extras:
                subject = f"{self.repo}/{EXTRA}/{extra.name}:{extra.tag_text}"
                self._push(self.repo, f"{extra.tag_text}.att", self._vex_image(subject))


def push_image(
    client: RegistryClient,
    repository: str,
    reference: str,
    layers: list[dict[str, FileContent]],
    workdir: Path,
) -> str:
    """Push one image built from ``layers`` as ``repository:reference`` (e.g. a tag
    re-published at the source); its digest."""
    return _Pusher(client).push(repository, reference, ImageBuilder(workdir).image(layers))


def seed_packages(
    client: RegistryClient, root_repo: str, spec: SeedSpec, workdir: Path, *, workers: int = 4
) -> SeededContent:
    """Build ``spec``'s images under ``workdir`` (a cache) and push them below ``root_repo``.

    Packages are seeded in parallel (``workers`` threads); the result does not depend on it.
    """
    builder = ImageBuilder(workdir)
    pusher = _Pusher(client)
    seeders = [
        _PackageSeeder(spec, package, root_repo, builder, pusher, {}) for package in spec.packages
    ]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(seeders)))) as pool:
        for _ in pool.map(_PackageSeeder.seed, seeders):
            pass
    refs: dict[str, str] = {}
    internal: dict[str, tuple[str, ...]] = {}
    for seeder in seeders:
        refs.update(seeder.refs)
        internal[seeder.package.name] = tuple(seeder.internal)
    if spec.catalog:
        catalog = f"{root_repo}/{PACKAGES}"
        for package in spec.packages:
            image = builder.image([{"package": package.name.encode()}])
            refs[f"{catalog}:{package.name}"] = pusher.push(catalog, package.name, image)
    return SeededContent(client.registry, root_repo, dict(sorted(refs.items())), internal)


def main(argv: list[str] | None = None) -> int:
    from d8mirror.registry import Credentials, RegistryClient, TLSOptions

    parser = argparse.ArgumentParser(
        prog="python -m testbed.seed", description="Seed a test registry with demo packages."
    )
    parser.add_argument("--registry", required=True, help="host:port of the registry")
    parser.add_argument("--root", default="deckhouse/ee", help="edition root repository")
    parser.add_argument("--workdir", type=Path, default=None, help="image build cache")
    parser.add_argument("--tls", action="store_true", help="use HTTPS (default: plain HTTP)")
    parser.add_argument("--ca-file", default=None)
    parser.add_argument("--username", default=None)
    parser.add_argument("--password", default=None)
    args = parser.parse_args(argv)
    credentials = None
    if args.username is not None:
        credentials = Credentials(args.username, args.password or "")
    tls = TLSOptions(insecure=not args.tls, ca_file=args.ca_file)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="d8mirror-seed-"))
    with RegistryClient(args.registry, credentials=credentials, tls=tls) as client:
        content = seed_packages(client, args.root, demo_spec(), workdir)
    for ref, digest in content.refs.items():
        print(f"{args.registry}/{ref} {digest}")
    print(
        f"seeded {len(content.refs)} references in {len(content.repositories)} repositories",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
