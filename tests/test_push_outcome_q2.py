"""Q2 through the mirror-push flow against a real registry, decided by what the archives
contain, not by their names (12.17): a pinned package's channel aliases beat the versions
catalog; for a package that is not pinned the catalog beats an older package archive."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import PIN_CHANNELS, PackageSpec, build_bundle, build_pinned_package

from d8mirror.push.summary import PushResult
from d8mirror.registry import RegistryClient
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")
_ns = itertools.count()
NEWER = {"stable": "v1.1.0", "alpha": "v1.1.0"}  # upstream moved stable on


def _push(server: RegistryServer, bundle: Path) -> tuple[str, PushResult]:
    from flows.push import run_push
    from tasks.push import PushParameters

    root = f"q2-{next(_ns)}/ee"
    result = run_push(
        PushParameters(bundle_dir=str(bundle), registry=f"{server.host}/{root}", insecure=True)
    )
    assert result.ok, result
    return root, result


def _channel(client: RegistryClient, root: str, channel: str) -> str:
    return client.head_manifest(f"{root}/packages/console/version", channel).digest


def test_a_pin_beats_the_versions_catalog_whatever_the_archives_are_called(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    archive, pinned = build_pinned_package(tmp_path / "pin", "console", "v1.0.0")
    upstream, versions = build_bundle(tmp_path / "up", [PackageSpec("console", channels=NEWER)])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    # names that say nothing (the catalog even sorts last): the content decides
    shutil.copy(archive, bundle / "a-console.tar")
    shutil.copy(upstream / "package-versions.tar", bundle / "b-catalog.tar")
    root, result = _push(registry2, bundle)
    with registry2.client() as client:
        for channel in PIN_CHANNELS:
            assert (
                _channel(client, root, channel)
                == pinned.tags[("packages/console/version", channel)]
            ), channel
        # tags only the catalog has are still pushed
        assert (
            _channel(client, root, "v1.1.0")
            == versions.tags[("packages/console/version", "v1.1.0")]
        )
    warnings = [w for w in result.warnings if "tag stable has 2 digests" in w]
    assert len(warnings) == 1 and "pins it" in warnings[0], result.warnings


def test_an_older_package_archive_does_not_override_a_newer_catalog_when_not_pinned(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    older, before = build_bundle(tmp_path / "old", [PackageSpec("console")])
    newer, after = build_bundle(tmp_path / "new", [PackageSpec("console", channels=NEWER)])
    assert (
        before.tags[("packages/console/version", "stable")]
        != after.tags[("packages/console/version", "stable")]
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    # the package archive sorts last, so "the later archive wins" would pick it: content decides
    shutil.copy(older / "package-console.tar", bundle / "zz-console.tar")
    shutil.copy(newer / "package-versions.tar", bundle)
    root, result = _push(registry2, bundle)
    with registry2.client() as client:
        assert (
            _channel(client, root, "stable") == after.tags[("packages/console/version", "stable")]
        )
        assert _channel(client, root, "alpha") == after.tags[("packages/console/version", "alpha")]
    warnings = [w for w in result.warnings if "tag stable has 2 digests" in w]
    assert len(warnings) == 1 and "versions catalog" in warnings[0], result.warnings


def test_the_rule_reads_real_pulls_right(
    registry: RegistryServer, registry2: RegistryServer, demo_content: Any, tmp_path: Path
) -> None:
    """A bundle from d8mirror's own pull: stronghold pinned to v0.5.0 (upstream stable is
    v0.4.0), console not pinned. The pin's aliases are recognised, console's pulled channel
    images are not taken for aliases, and the pin lands."""
    from d8mirror.bundle import discover_archives
    from d8mirror.push.index_merge import Provenance
    from d8mirror.push.unified import unpack_all
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = tmp_path / "bundle"
    pulled = run_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/deckhouse/ee",
            insecure=True,
            include_packages=["stronghold@=v0.5.0", "console"],
        )
    )
    assert pulled.status == "completed", pulled
    unified = tmp_path / "unified"
    unpack_all(discover_archives(bundle), unified)
    pins = Provenance.load(unified / "packages/stronghold/version").pins
    assert sorted(ref.rsplit(":", 1)[1] for _, ref in pins if ref) == sorted(PIN_CHANNELS)
    assert Provenance.load(unified / "packages/console/version").pins == {}

    root, _ = _push(registry2, bundle)
    with registry2.client() as client:
        pinned = client.head_manifest(f"{root}/packages/stronghold/version", "v0.5.0").digest
        assert (
            client.head_manifest(f"{root}/packages/stronghold/version", "stable").digest == pinned
        )
        upstream = client.head_manifest(f"{root}/packages/console/version", "v1.1.0").digest
        assert _channel(client, root, "stable") == upstream
