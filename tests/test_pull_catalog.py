"""``package-versions.tar`` is the packages catalog of a bundle (R-6.9, issue 12.2): it
covers every package of the source catalog whatever the package filters, so push creates a
``packages:<name>`` discovery tag for each of them."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from d8mirror.pull.discovery import discover_packages
from d8mirror.pull.options import PullOptions
from d8mirror.reference import Repository
from d8mirror.versions import PackageFilter
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

DEMO_PACKAGES = ["code", "console", "stronghold"]
_ns = itertools.count()


def _params(registry: RegistryServer, bundle: Path, **extra: Any) -> Any:
    from tasks.models import PullParameters

    return PullParameters(
        bundle_dir=str(bundle), source=f"{registry.host}/deckhouse/ee", insecure=True, **extra
    )


def _catalog(bundle: Path) -> dict[str, set[str]]:
    """package name -> short tags of its ``version/`` layout in package-versions.tar."""
    out: dict[str, set[str]] = {}
    with tarfile.open(bundle / "package-versions.tar") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if parts[0] == "packages" and parts[2:] == ["version", "index.json"]:
                handle = tar.extractfile(member)
                assert handle is not None
                index = json.load(handle)
                out[parts[1]] = {m["annotations"][ANNOTATION_SHORT_TAG] for m in index["manifests"]}
    return out


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    "flags",
    [
        {"include_packages": ["console@=v1.0.0"]},
        {"include_packages": ["console@~1.1.0"]},
        {"exclude_packages": ["code", "stronghold"]},
        {"only_extra_images": True, "include_packages": ["console@=v1.1.0"]},
        {"no_packages": True, "include_packages": ["console"]},
    ],
    ids=["pin", "semver", "exclude", "only-extra", "no-packages"],
)
def test_package_versions_covers_every_catalog_package_whatever_the_filters(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path, flags: dict[str, Any]
) -> None:
    from flows.pull import run_pull

    bundle = tmp_path / "bundle"
    run_pull(_params(registry, bundle, tmp_dir=str(tmp_path / "work"), **flags))
    catalog = _catalog(bundle)
    assert sorted(catalog) == DEMO_PACKAGES
    for name in DEMO_PACKAGES:  # every tag of <name>/version, not only the selected ones
        assert set(demo_content.tags(f"deckhouse/ee/packages/{name}/version")) <= catalog[name]
    pulled = sorted(p.name for p in bundle.glob("package-*.tar"))
    if flags.get("no_packages"):
        assert pulled == ["package-versions.tar"]
    elif "include_packages" in flags and not flags.get("only_extra_images"):
        assert pulled == ["package-console.tar", "package-versions.tar"]


def test_lenient_discovery_is_unfiltered_and_proxy_mode_keeps_the_whitelist(
    registry: RegistryServer, demo_content: SeededContent
) -> None:
    """The catalog ignores filters; in proxy mode (no catalog listing) it is the whitelist."""
    source = Repository.parse(f"{registry.host}/deckhouse/ee")
    pinned = PackageFilter.from_flags(["console@=v1.0.0"])
    with registry.client() as client:
        strict = discover_packages(client, PullOptions(source=source, package_filter=pinned))
        lenient = discover_packages(
            client, PullOptions(source=source, package_filter=pinned), lenient=True
        )
        excluded = discover_packages(
            client,
            PullOptions(
                source=source,
                package_filter=PackageFilter.from_flags(exclude=["code", "console", "stronghold"]),
            ),
            lenient=True,
        )
        proxy = discover_packages(
            client,
            PullOptions(
                source=source,
                proxy_registry=True,
                package_filter=PackageFilter.from_flags(["stronghold@~0.4", "console"]),
            ),
            lenient=True,
        )
    assert strict.names == ["console"]
    assert lenient.names == DEMO_PACKAGES and lenient.warnings == []
    assert excluded.names == DEMO_PACKAGES and excluded.warnings == []
    assert proxy.names == ["console", "stronghold"]


@pytest.mark.usefixtures("prefect_server")
def test_filtered_bundle_pushes_a_discovery_tag_for_every_catalog_package(
    registry: RegistryServer, demo_content: SeededContent, registry2: RegistryServer, tmp_path: Path
) -> None:
    """Pull with a pin on one package, push: the target's ``packages`` repo lists all three
    packages, and each one's release channels are there."""
    from flows.pull import run_pull
    from flows.push import run_push
    from tasks.push import PushParameters

    bundle = tmp_path / "bundle"
    run_pull(
        _params(
            registry, bundle, include_packages=["console@=v1.0.0"], tmp_dir=str(tmp_path / "work")
        )
    )
    root = f"catalog-{next(_ns)}/ee"
    result = run_push(
        PushParameters(
            bundle_dir=str(bundle),
            registry=f"{registry2.host}/{root}",
            insecure=True,
            tmp_dir=str(tmp_path / "push-work"),
        )
    )
    assert result.ok
    with registry2.client() as client:
        assert client.list_tags(f"{root}/packages") == DEMO_PACKAGES
        for name in ("code", "stronghold"):
            assert client.head_manifest(f"{root}/packages/{name}/version", "stable").digest == (
                demo_content.digest(f"deckhouse/ee/packages/{name}/version:stable")
            )
