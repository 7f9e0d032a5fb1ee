"""The bench corpus: Deckhouse-shaped packages seeded into a local registry (bench/run).

    preset "small": 12 packages x 4 versions, about 200 MB unique;
    preset "full":  the same shape, about 2 GB unique.

Every package has 5 channels over its 4 versions (so all 4 are mirrored), 2 internal images per
version (image 0 shared by all versions), one small extra image with VEX, and VEX for its newest
version. ``shared_fraction`` of each main image's payload sits in a base layer shared by every
package. ``big_packages`` packages carry a large extra image instead (one ``big_layer`` layer:
"a few 200 MB layers"); ``huge_layer`` > 0 adds one more extra image of that size (for the RSS
target "2 GiB blob in the corpus").

:func:`update_corpus` adds one newer version to some packages and moves channels to it, which
touches about 5 % of the tags and bytes (the "5 % changed" re-pull).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.seed import ExtraSpec, PackageSpec, SeededContent, SeedSpec, seed_packages

if TYPE_CHECKING:
    from d8mirror.registry import RegistryClient

ROOT = "deckhouse/ee"
MiB = 1 << 20


@dataclass(frozen=True)
class CorpusSpec:
    packages: int = 12
    versions: int = 4
    payload: int = 3 * MiB  # per main image (shared base + own layer)
    shared_fraction: float = 0.3
    extra_payload: int = 256 << 10  # small extra image per package
    big_packages: int = 2  # packages whose extra image is one big layer
    big_layer: int = 40 * MiB
    huge_layer: int = 0  # one more extra image of this size (0 = none)
    changed_packages: int = 2  # packages that get a new version in update_corpus

    @staticmethod
    def preset(name: str) -> CorpusSpec:
        if name == "small":
            return CorpusSpec()
        if name == "full":
            return CorpusSpec(
                payload=40 * MiB, extra_payload=1 * MiB, big_packages=3, big_layer=200 * MiB
            )
        raise ValueError(f"unknown preset {name!r}")

    def estimated_unique_bytes(self) -> int:
        base = round(self.payload * self.shared_fraction)
        own = self.payload - base
        small = self.packages - self.big_packages
        return (
            base
            + self.packages * self.versions * own
            + small * self.extra_payload
            + self.big_packages * self.big_layer
            + self.huge_layer
        )


def _versions(count: int, start: int = 0) -> tuple[str, ...]:
    return tuple(f"v1.{minor}.0" for minor in range(start, start + count))


def _channels(versions: tuple[str, ...]) -> dict[str, str]:
    """5 channels spread over the newest 4 versions (rock-solid and stable share one when
    there are fewer than 5)."""
    newest = list(reversed(versions))
    pick = [newest[min(i, len(newest) - 1)] for i in (0, 1, 2, 3, 3)]
    return dict(zip(("alpha", "beta", "early-access", "stable", "rock-solid"), pick, strict=True))


def _package(spec: CorpusSpec, index: int, versions: tuple[str, ...], big: bool) -> PackageSpec:
    extra = ExtraSpec("bigdata" if big else "scanner", "v0.1.0")
    return PackageSpec(
        name=f"pkg{index:02d}",
        versions=versions,
        channels=_channels(versions),
        extras=(extra,),
        internal_images=2,
        vex_versions=(versions[-1],),
        vex_internal=False,
        vex_extras=(extra.name,),
        manifest_format="docker" if index % 4 == 3 else "oci",
    )


def _seed_specs(spec: CorpusSpec, versions: Mapping[int, tuple[str, ...]]) -> list[SeedSpec]:
    """One SeedSpec per extra size (small extras, big extras), same shared base layer."""
    small = tuple(
        _package(spec, i, versions[i], False)
        for i in range(spec.packages - spec.big_packages)
        if i in versions
    )
    big = tuple(
        _package(spec, i, versions[i], True)
        for i in range(spec.packages - spec.big_packages, spec.packages)
        if i in versions
    )
    specs = []
    if small:
        specs.append(
            SeedSpec(
                packages=small,
                extra_payload_size=spec.extra_payload,
                payload_size=spec.payload,
                shared_layer_fraction=spec.shared_fraction,
            )
        )
    if big:
        specs.append(
            SeedSpec(
                packages=big,
                extra_payload_size=spec.big_layer,
                payload_size=spec.payload,
                shared_layer_fraction=spec.shared_fraction,
            )
        )
    return specs


@dataclass
class Corpus:
    spec: CorpusSpec
    refs: dict[str, str]  # repo:tag or repo@digest (no host) -> manifest digest
    seconds: float

    def mirrored_refs(self) -> list[str]:
        """What a full pull mirrors: everything but the catalog images ``packages:<name>``."""
        catalog = f"{ROOT}/packages:"
        return sorted(r for r in self.refs if not r.startswith(catalog))


def _merge(refs: dict[str, str], content: SeededContent) -> None:
    refs.update(content.refs)


def _add_huge(
    client: RegistryClient, workdir: Path, spec: CorpusSpec, refs: dict[str, str]
) -> None:
    """``pkg00``'s extra image list cannot grow without new main images, so the huge layer
    replaces pkg00's small extra image under the same tag."""
    from testbed.images import ImageBuilder, RandomFile

    builder = ImageBuilder(workdir)
    image = builder.image([{"extra/huge.bin": RandomFile(spec.huge_layer, "bench-huge")}])
    repo = f"{ROOT}/packages/pkg00/extra/scanner"
    for blob in image.blobs:
        if not client.blob_exists(repo, blob.digest):
            client.upload_blob(repo, blob.digest, blob.path, size=blob.size)
    refs[f"{repo}:v0.1.0"] = client.put_manifest(repo, "v0.1.0", image.manifest, image.media_type)


def seed_corpus(client: RegistryClient, spec: CorpusSpec, workdir: Path) -> Corpus:
    """Build (cached under ``workdir``) and push the corpus; deterministic."""
    started = time.perf_counter()
    refs: dict[str, str] = {}
    versions = {i: _versions(spec.versions) for i in range(spec.packages)}
    for seed_spec in _seed_specs(spec, versions):
        _merge(refs, seed_packages(client, ROOT, seed_spec, workdir, workers=4))
    if spec.huge_layer:
        _add_huge(client, workdir, spec, refs)
    return Corpus(spec, refs, time.perf_counter() - started)


def update_corpus(client: RegistryClient, corpus: Corpus, workdir: Path) -> list[str]:
    """Add one newer version to ``changed_packages`` packages (channels move up); returns the
    new or moved references. The old versions stay, so the re-pull keeps 4 of them and adds 1."""
    spec = corpus.spec
    step = max(1, spec.packages // max(1, spec.changed_packages))
    chosen = list(range(0, spec.packages, step))[: spec.changed_packages]
    versions = {i: _versions(spec.versions + 1) for i in chosen}
    before = dict(corpus.refs)
    for seed_spec in _seed_specs(spec, versions):
        _merge(
            corpus.refs,
            seed_packages(client, ROOT, replace(seed_spec, catalog=False), workdir, workers=4),
        )
    if spec.huge_layer and 0 in chosen:
        _add_huge(client, workdir, spec, corpus.refs)
    return sorted(r for r, d in corpus.refs.items() if before.get(r) != d)
