"""The per-package pull core against a real registry (R-10.1 acceptance lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request, Response
from pull_stages import Stages

from d8mirror.blobstore import BlobStore
from d8mirror.errors import ConfigError, DeniedError, ManifestNotFoundError, ServerError
from d8mirror.layout import Layout
from d8mirror.pull.discovery import DiscoveryError, discover_packages, validate_proxy_mode
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.options import PullOptions
from d8mirror.pull.packing import pack_package
from d8mirror.pull.plan import (
    PackagePullError,
    available_channels,
    plan_package,
    planned_images,
)
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient, TLSOptions
from d8mirror.retry import RetryPolicy
from d8mirror.versions import PackageFilter
from testbed.registry_server import RegistryServer
from testbed.seed import ExtraSpec, PackageSpec, SeedSpec, seed_packages

ROOT = "deckhouse/fe"
SELECTION_TAGS = ("v1.39.0", "v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.45.2")
ALL_ON_1452 = {c: "v1.45.2" for c in ("alpha", "beta", "early-access", "stable", "rock-solid")}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with the package-test corpus of R-3.4 (`console`), an LTS package and a
    package that has channels but no main images."""
    spec = SeedSpec(
        payload_size=8 << 10,
        extra_payload_size=2 << 10,
        packages=(
            PackageSpec(
                "console",
                SELECTION_TAGS,
                channels=ALL_ON_1452,
                internal_images=1,
                extras=(ExtraSpec("scanner", "v0.6.0"),),
                vex_versions=("v1.45.2",),
            ),
            PackageSpec(
                "scanner", ("v0.6.0", "v0.7.0"), channels={"stable": "v0.7.0"}, internal_images=0
            ),
            PackageSpec(
                "withlts",
                ("v2.0.0", "v2.1.0"),
                channels={"stable": "v2.1.0", "lts": "v2.0.0"},
                internal_images=0,
            ),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("pull-source")) as server:
        with server.client() as client:
            seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("pull-images"))
        yield server


def _puller(server: RegistryServer, tmp_path: Path, **options: object) -> Stages:
    client = server.client()
    opts = PullOptions(source=Repository.parse(f"{server.host}/{ROOT}"), **options)  # type: ignore[arg-type]
    return Stages(ImageFetcher(client, BlobStore(tmp_path / "store")), opts)


def _versions(puller: Stages, name: str, include: str) -> list[str]:
    return puller.including(include).plan(name).versions


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        ("console@1.40.0", ["v1.45.2", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0"]),
        ("console@^1.40.0", ["v1.45.2", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0"]),
        ("console@~1.40.0", ["v1.45.2", "v1.40.1"]),
        ("console@>=1.40.0 <1.43.0", ["v1.45.2", "v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0"]),
        ("console@>=1.40.0", ["v1.45.2", "v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0"]),
        ("console", ["v1.45.2"]),
        ("console@=v1.41.0", ["v1.41.0"]),
    ],
)
def test_semver_constraints_select_latest_patch_per_minor_plus_channels(
    source: RegistryServer, tmp_path: Path, include: str, expected: list[str]
) -> None:
    """Acceptance 1–4 and 30: channel versions first, then the selection of R-3.4."""
    assert _versions(_puller(source, tmp_path), "console", include) == expected


def test_per_package_tag_listing_only_for_non_exact_semver(
    source: RegistryServer, tmp_path: Path
) -> None:
    """Acceptance 7: +1 ListTags per package only for a non-exact semver constraint."""
    puller = _puller(source, tmp_path)
    for include, listings in (("console@=v1.41.0", 0), ("console", 0), ("console@~1.40.0", 1)):
        source.clear_requests()
        _versions(puller, "console", include)
        assert source.count("GET", f"{ROOT}/packages/console/tags/list") == listings, include


def test_proxy_mode_probes_tags_and_never_lists(source: RegistryServer, tmp_path: Path) -> None:
    """Acceptance 22: proxy mode makes zero tag-list calls and finds the semver range."""
    puller = _puller(
        source,
        tmp_path,
        proxy_registry=True,
        package_filter=PackageFilter.from_flags(["console@>=1.40.0 <1.42.0"]),
    )
    source.clear_requests()
    versions = _versions(puller, "console", "console@>=1.40.0 <1.42.0")
    assert source.count("GET", "/tags/list") == 0
    assert versions == ["v1.45.2", "v1.40.0", "v1.40.1", "v1.41.0"]
    found = discover_packages(puller.fetcher.client, puller.options)
    assert found.names == ["console"] and source.count("GET", "/tags/list") == 0


def test_proxy_mode_without_whitelist_is_refused_up_front(
    source: RegistryServer, tmp_path: Path
) -> None:
    """Q5: --proxy-registry needs --include-package, checked before any request."""
    puller = _puller(source, tmp_path, proxy_registry=True)
    with pytest.raises(ConfigError, match="--include-package"):
        validate_proxy_mode(puller.options)


def test_full_package_pull_lands_every_planned_image(
    source: RegistryServer, tmp_path: Path
) -> None:
    """R-6.6 order: channels, main, release, internal, extra, VEX; archive > 5120 bytes
    (AC-12, AC-27)."""
    puller = _puller(source, tmp_path).including("console@~1.40.0")
    result = puller.pull("console", tmp_path / "work")
    assert result.versions == ["v1.45.2", "v1.40.1"]
    main = {e.short_tag for e in Layout.open(tmp_path / "work").entries()}
    assert {"v1.45.2", "v1.40.1", "v1.45.2.att"} <= main
    assert len([t for t in main if t and len(t) == 64]) == 1  # internal image shared by versions
    version = {e.short_tag for e in Layout.open(tmp_path / "work" / "version").entries()}
    assert version == {
        "alpha",
        "beta",
        "early-access",
        "stable",
        "rock-solid",
        "v1.45.2",
        "v1.40.1",
    }
    extra = Layout.open(tmp_path / "work" / "extra" / "scanner")
    assert [e.short_tag for e in extra.entries()] == ["v0.6.0"]
    assert result.vex == 1 and result.images == len(main) + len(version) + 1
    archive = pack_package(tmp_path / "work", tmp_path / "bundle", "console")
    assert archive is not None and archive.size > 5120


def test_lts_channel_is_mirrored_when_present(source: RegistryServer, tmp_path: Path) -> None:
    """Acceptance 16: version:lts in the plan, its version pulled."""
    puller = _puller(source, tmp_path)
    assert available_channels(puller.fetcher, puller.options, "withlts")[-1] == "lts"
    assert "lts" not in available_channels(puller.fetcher, puller.options, "scanner")
    result = puller.pull("withlts", tmp_path / "work")
    assert result.versions == ["v2.1.0", "v2.0.0"]
    tags = {e.short_tag for e in Layout.open(tmp_path / "work" / "version").entries()}
    assert {"stable", "lts"} <= tags


def test_missing_pin_is_a_warning_and_no_stub_archive(
    source: RegistryServer, tmp_path: Path
) -> None:
    """Q19 and AC-10: a pin that does not exist is reported; nothing is packed."""
    puller = _puller(source, tmp_path).including("console@=v9.9.9")
    result = puller.pull("console", tmp_path / "work")
    assert any("v9.9.9" in w for w in result.warnings)
    assert pack_package(tmp_path / "work", tmp_path / "bundle", "console") is None
    assert not (tmp_path / "bundle").exists() or list((tmp_path / "bundle").iterdir()) == []


def test_incomplete_layout_fails_the_package_naming_the_images(
    source: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R-6.4, AC-38: a planned image missing from its layout fails the package."""
    real_add = Layout.add_manifest

    def drop_v1401(self: Layout, **kw: object) -> bool:
        if kw["short_tag"] == "v1.40.1" and self.path.name == "work":
            return False
        return real_add(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Layout, "add_manifest", drop_v1401)
    puller = _puller(source, tmp_path).including("console@~1.40.0")
    with pytest.raises(PackagePullError, match=r"incomplete.*work:v1\.40\.1") as err:
        puller.pull("console", tmp_path / "work")
    assert "v1.45.2" not in str(err.value)


def test_missing_catalog_degrades_gracefully(registry2: RegistryServer, tmp_path: Path) -> None:
    """Acceptance 9 and 19: no packages repo → warning, nothing to mirror, no error."""
    with registry2.client() as client:
        options = PullOptions(source=Repository.parse(f"{registry2.host}/nothing/here"))
        found = discover_packages(client, options)
    assert found.names == [] and "Skipping pull of packages" in found.warnings[0]


def test_denied_catalog_is_fatal_for_packages_but_not_for_versions(
    basic_registry: RegistryServer, tmp_path: Path
) -> None:
    """R-2.2 / Q6: a 401 on the catalog fails the packages phase, warns for package-versions."""
    anonymous = basic_registry.client(credentials=None)
    options = PullOptions(source=Repository.parse(f"{basic_registry.host}/{ROOT}"))
    with pytest.raises(DiscoveryError, match="validate packages access"):
        discover_packages(anonymous, options)
    lenient = discover_packages(anonymous, options, lenient=True)
    assert lenient.names == [] and "package-versions" in lenient.warnings[0]


def test_only_not_found_means_missing(source: RegistryServer, tmp_path: Path) -> None:
    """Q12: resolve() returns None only for 404; the fetcher never hides other errors."""
    puller = _puller(source, tmp_path)
    assert puller.fetcher.resolve(f"{ROOT}/packages/console", "v0.0.0") is None
    with pytest.raises(ManifestNotFoundError):
        puller.fetcher.client.head_manifest(f"{ROOT}/packages/console", "v0.0.0")


def test_dry_run_plans_release_and_vex_images_without_writing(
    source: RegistryServer, tmp_path: Path
) -> None:
    """R-6.7 and better than the reference: the plan lists channels, existing main and release
    images and VEX attestations found by HEAD; no layout is written."""
    puller = _puller(source, tmp_path, dry_run=True)
    planned = planned_images(puller.fetcher, puller.options, puller.plan("console"))
    base = f"{source.host}/{ROOT}/packages/console"
    assert planned == [
        *[f"{base}/version:{c}" for c in ("alpha", "beta", "early-access", "stable", "rock-solid")],
        f"{base}:v1.45.2",
        f"{base}/version:v1.45.2",
        f"{base}:v1.45.2.att",
    ]
    assert not (tmp_path / "work").exists()


def test_only_extra_images_pulls_extras_of_the_constrained_versions(
    source: RegistryServer, tmp_path: Path
) -> None:
    """R-3.6: no channels, no main/release/internal images; extras of constrained versions
    only; a bare include pulls nothing and succeeds (open issue #426 behaviour)."""
    puller = _puller(source, tmp_path, only_extra_images=True)
    result = puller.including("console@~1.40.0").pull("console", tmp_path / "work")
    assert result.versions == ["v1.40.1"]
    assert Layout.open(tmp_path / "work").entries() == []
    assert Layout.open(tmp_path / "work" / "version").entries() == []
    extra = Layout.open(tmp_path / "work" / "extra" / "scanner")
    assert [e.short_tag for e in extra.entries()] == ["v0.6.0"]
    bare = puller.pull("console", tmp_path / "bare")
    assert bare.versions == [] and bare.images == 0


@pytest.mark.parametrize(("status", "error"), [(403, DeniedError), (503, ServerError)])
def test_only_not_found_means_no_lts_channel(
    source: RegistryServer, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    """Q12: a denied (403) or still failing (5xx after the retries) ``version:lts``
    lookup fails the plan, so the package, instead of silently dropping the channel; the
    registry's 404 (no lts) is what drops it."""
    asked: list[str] = []

    def refuse_lts(request: Request) -> Response | None:
        if request.path.endswith("/console/version/manifests/lts"):  # HEAD, then GET
            asked.append(request.method)
            answer = Response.error(status, "DENIED" if status == 403 else "UNAVAILABLE")
            answer.head_only = request.method == "HEAD"
            return answer
        return None

    with (
        FaultProxy(source.host, intercept=refuse_lts) as proxy,
        RegistryClient(proxy.host, tls=TLSOptions(insecure=True)) as client,
    ):
        fetcher = ImageFetcher(
            client, BlobStore(tmp_path / "store"), retry=RetryPolicy(attempts=2, base_delay=0)
        )
        options = PullOptions(source=Repository.parse(f"{proxy.host}/{ROOT}"))
        with pytest.raises(error):
            plan_package(fetcher, options, "console")
        assert "lts" not in plan_package(fetcher, options, "scanner").channels
    assert asked == ["HEAD", "GET"] * (1 if status == 403 else 2)  # a 403 is never retried
