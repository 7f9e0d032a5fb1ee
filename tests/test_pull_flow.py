"""The mirror-pull Prefect flow against a real registry seeded with Deckhouse-shaped content."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from d8mirror.bundle import verify_sidecars
from d8mirror.mediatypes import ANNOTATION_REF_NAME, ANNOTATION_SHORT_TAG
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")


def _params(registry: RegistryServer, bundle: Path, **extra: Any) -> Any:
    from tasks.models import PullParameters

    fields = {"source": f"{registry.host}/deckhouse/ee", "insecure": True, **extra}
    return PullParameters(bundle_dir=str(bundle), **fields)


def _index(tar_path: Path, layout: str) -> dict[str, Any]:
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(f"{layout}/index.json")
        assert member is not None
        return dict(json.load(member))


def _tags(index: dict[str, Any]) -> dict[str, str]:
    return {m["annotations"][ANNOTATION_SHORT_TAG]: m["digest"] for m in index["manifests"]}


def test_pull_writes_one_archive_per_package_plus_versions(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """R-6.9, R-7.1: package-<name>.tar per package, package-versions.tar always, sidecars."""
    from flows.pull import run_pull

    bundle = tmp_path / "bundle"
    report = run_pull(_params(registry, bundle))
    names = sorted(p.name for p in bundle.iterdir() if p.suffix == ".tar")
    assert names == [
        "package-code.tar",
        "package-console.tar",
        "package-stronghold.tar",
        "package-versions.tar",
    ]
    assert verify_sidecars(bundle) == []
    assert report.status == "completed"
    saved = json.loads((bundle / "report.json").read_text())
    assert {p["name"]: p["status"] for p in saved["packages"]} == {
        "code": "pulled",
        "console": "pulled",
        "stronghold": "pulled",
    }

    console = _index(bundle / "package-console.tar", "packages/console")
    tags = _tags(console)
    root = "deckhouse/ee/packages/console"
    for version in ("v1.2.0", "v1.1.0", "v1.0.1"):  # channel versions only (bare pull)
        assert tags[version] == demo_content.digest(f"{root}:{version}")
    assert "v1.0.0" not in tags  # no channel points at it
    internal = {d.split(":")[1]: d for d in demo_content.internal_digests["console"]}
    pulled_internal = {t: d for t, d in tags.items() if t in internal}
    assert len(pulled_internal) == 1 + 3  # one shared + one per pulled version
    assert all(internal[t] == d for t, d in pulled_internal.items())
    assert any(t.endswith(".att") for t in tags)  # VEX
    for m in console["manifests"]:
        assert m["annotations"][ANNOTATION_REF_NAME].startswith(f"{registry.host}/{root}")

    versions = _tags(_index(bundle / "package-console.tar", "packages/console/version"))
    assert versions["stable"] == demo_content.digest(f"{root}/version:stable")
    scanner = _tags(_index(bundle / "package-console.tar", "packages/console/extra/scanner"))
    assert scanner == {"v1.2.3": demo_content.digest(f"{root}/extra/scanner:v1.2.3")}

    catalog = _tags(_index(bundle / "package-versions.tar", "packages/code/version"))
    assert catalog["lts"] == demo_content.digest("deckhouse/ee/packages/code/version:lts")
    assert set(demo_content.tags("deckhouse/ee/packages/code/version")) <= set(catalog)


def test_exact_pin_is_aliased_to_every_channel(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """R-4 / R-3.4 table: name@=v1.0.0 pulls only v1.0.0, no channel images, aliased to all six."""
    from flows.pull import run_pull

    bundle = tmp_path / "bundle"
    run_pull(_params(registry, bundle, include_packages=["console@=v1.0.0"]))
    assert sorted(p.name for p in bundle.glob("*.tar")) == [
        "package-console.tar",
        "package-versions.tar",
    ]
    main = _tags(_index(bundle / "package-console.tar", "packages/console"))
    assert "v1.0.0" in main and "v1.2.0" not in main
    version = _index(bundle / "package-console.tar", "packages/console/version")
    pinned = demo_content.digest("deckhouse/ee/packages/console/version:v1.0.0")
    assert _tags(version) == {
        t: pinned
        for t in ("v1.0.0", "alpha", "beta", "early-access", "stable", "rock-solid", "lts")
    }
    for m in version["manifests"]:  # Q3: host:port survives in alias ref names
        tag = m["annotations"][ANNOTATION_SHORT_TAG]
        assert m["annotations"][ANNOTATION_REF_NAME] == (
            f"{registry.host}/deckhouse/ee/packages/console/version:{tag}"
        )


def test_dry_run_writes_nothing_to_the_bundle_dir(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """R-6.7, AC-15 and AC-17: dry-run plans channels and versions, writes no file."""
    from flows.pull import run_pull

    bundle = tmp_path / "bundle"
    report = run_pull(_params(registry, bundle, dry_run=True, tmp_dir=str(tmp_path / "work")))
    assert list(bundle.iterdir()) == []
    planned = {p.name: p.versions for p in report.packages}
    assert planned["code"] == ["v1.7.0", "v1.6.2", "v1.6.1"]


def test_rerun_into_the_same_bundle_dir_fetches_no_blob(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """Issue 3 caching (b): a new run against an unchanged source downloads no blob again,
    and the archives come out byte-identical."""
    from flows.pull import run_pull

    bundle, cache = tmp_path / "bundle", str(tmp_path / "bundle" / ".tmp")  # a kept cache (Q9)
    run_pull(_params(registry, bundle, include_packages=["code"], tmp_dir=cache))
    first = {p.name: p.read_bytes() for p in bundle.glob("*.tar")}
    written = (bundle / "package-code.tar").stat().st_mtime_ns
    registry.clear_requests()
    run_pull(_params(registry, bundle, include_packages=["code"], tmp_dir=cache))
    assert registry.count("GET", "/blobs/") == 0
    assert {p.name: p.read_bytes() for p in bundle.glob("*.tar")} == first
    # packed from the same content into the same place: kept, not written again
    assert (bundle / "package-code.tar").stat().st_mtime_ns == written


def test_rerun_into_a_fresh_bundle_dir_links_the_archives_packed_before(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """Warm re-pull, same working dir, new bundle dir: unchanged packages are not packed
    again, their archives (and sidecars) are hard links to the ones packed the first time."""
    from flows.pull import run_pull

    work = str(tmp_path / "work")
    first, second = tmp_path / "first", tmp_path / "second"
    run_pull(_params(registry, first, include_packages=["code"], tmp_dir=work))
    registry.clear_requests()
    run_pull(_params(registry, second, include_packages=["code"], tmp_dir=work))
    assert registry.count("GET", "/blobs/") == 0
    for name in ("package-code.tar", "package-code.tar.sha256"):
        assert (second / name).stat().st_ino == (first / name).stat().st_ino
    assert verify_sidecars(second) == []
    report = json.loads((second / "report.json").read_text())
    assert {a["name"] for a in report["archives"]} >= {"package-code.tar"}


def test_gost_sidecars_use_the_digests_computed_while_packing(
    registry: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--gost-digest: the end of the pull writes every .gostsum from the digests its packing
    computed, also for archives linked from an earlier pull, and reads no archive again."""
    from d8mirror.bundle import checksums
    from flows.pull import run_pull

    monkeypatch.setattr(checksums, "gost_hex_file", lambda path: pytest.fail(f"re-read {path}"))
    work = str(tmp_path / "work")
    for bundle in (tmp_path / "first", tmp_path / "second"):
        run_pull(
            _params(registry, bundle, include_packages=["code"], tmp_dir=work, gost_digest=True)
        )
        archives = sorted(p.name for p in bundle.glob("*.tar"))
        assert archives == ["package-code.tar", "package-versions.tar"]
        assert sorted(p.name for p in bundle.glob("*.gostsum")) == [
            f"{a}.gostsum" for a in archives
        ]
    monkeypatch.undo()
    assert verify_sidecars(tmp_path / "second") == []


def test_denied_lts_fails_its_package_and_release_list_errors_reach_the_report(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """Q12 through the flow: a 403 on ``version:lts`` fails that package (its plan)
    and its release-image pull, the other packages are pulled; a release repository whose
    tag list is refused is a warning of the report (R-6.9), not lost."""
    from faultproxy import FaultProxy, Request, Response

    from d8mirror.errors import PullFailed
    from flows.pull import run_pull

    def deny(request: Request) -> Response | None:
        if request.path.endswith(
            "/packages/console/version/manifests/lts"
        ) or request.path.endswith("/packages/code/version/tags/list"):
            answer = Response.error(403, "DENIED")
            answer.head_only = request.method == "HEAD"
            return answer
        return None

    bundle = tmp_path / "bundle"
    with (
        FaultProxy(registry.host, intercept=deny) as proxy,
        pytest.raises(PullFailed, match="console"),
    ):
        run_pull(
            _params(
                registry,
                bundle,
                source=f"{proxy.host}/deckhouse/ee",
                include_packages=["console", "code"],
            )
        )
    report = json.loads((bundle / "report.json").read_text())
    status = {p["name"]: (p["status"], p["error"] or "") for p in report["packages"]}
    assert status["code"] == ("pulled", "")
    assert status["console"][0] == "failed" and "DeniedError" in status["console"][1]
    assert any(
        w.startswith("Failed to pull release images for package console: DeniedError")
        for w in report["warnings"]
    ), report["warnings"]
    assert any(
        w.startswith("list tags of deckhouse/ee/packages/code/version: ")
        for w in report["warnings"]
    ), report["warnings"]
    assert (bundle / "package-versions.tar").is_file()
