"""A small Deckhouse-shaped corpus that moves on: state A, then B (a new version, channels moved
so v1.0.0 drops out, a new package), then C (once more). Each test seeds its own root."""

from __future__ import annotations

from pathlib import Path

from testbed.registry_server import RegistryServer
from testbed.seed import ExtraSpec, PackageSpec, SeedSpec, seed_packages

STEADY = PackageSpec(
    "steady", ("v0.1.0",), channels={"alpha": "v0.1.0", "stable": "v0.1.0"}, internal_images=1
)
NEWCOMER = PackageSpec("newcomer", ("v2.0.0",), channels={"stable": "v2.0.0"}, internal_images=1)


def channels(fast: str, slow: str) -> dict[str, str]:
    """alpha and beta on ``fast``, the other three channels on ``slow``."""
    return {"alpha": fast, "beta": fast, "early-access": slow, "stable": slow, "rock-solid": slow}


def moving(versions: tuple[str, ...], on: dict[str, str]) -> PackageSpec:
    """The package that moves: an extra image, internal images, VEX of every version."""
    return PackageSpec(
        "moving",
        versions,
        channels=on,
        extras=(ExtraSpec("scanner", "v1"),),
        internal_images=2,
        vex_versions=versions,
        vex_internal=True,
    )


def _state(versions: tuple[str, ...], fast: str, slow: str, *more: PackageSpec) -> SeedSpec:
    return SeedSpec(
        payload_size=32 << 10,
        extra_payload_size=4 << 10,
        packages=(moving(versions, channels(fast, slow)), STEADY, *more),
    )


STATE_A = _state(("v1.0.0", "v1.1.0"), "v1.1.0", "v1.0.0")
STATE_B = _state(("v1.0.0", "v1.1.0", "v1.2.0"), "v1.2.0", "v1.1.0", NEWCOMER)
STATE_C = _state(("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"), "v1.3.0", "v1.2.0", NEWCOMER)


def seed(registry: RegistryServer, root: str, spec: SeedSpec, work: Path) -> None:
    with registry.client() as client:
        seed_packages(client, root, spec, work)
