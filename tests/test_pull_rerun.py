"""A rerun after the source moved on builds its layouts from this run's plan only (issue 12.1):
archives byte-identical to a fresh pull of the new state, whichever working dir is reused.

Each test seeds its own root in the session registry (``demo_content`` is left alone): state A,
a pull, then state B on top (a new version, channels moved so an old version drops out, a new
package), the rerun, and a fresh pull of B to compare with.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from moving_corpus import STATE_A, STATE_B, seed

from app.main import main
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from testbed.images import canonical_json
from testbed.registry_server import RegistryServer
from testbed.seed import (
    SeededContent,
    push_image,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _params(registry: RegistryServer, root: str, bundle: Path, **extra: Any) -> Any:
    from tasks.models import PullParameters

    return PullParameters(
        bundle_dir=str(bundle), source=f"{registry.host}/{root}", insecure=True, **extra
    )


def _archives(bundle: Path) -> dict[str, bytes]:
    """Every archive and sidecar of a bundle (report.json holds timings, so it is left out)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != "report.json"
    }


def _short_tags(archive: Path, layout: str) -> list[str]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"{layout}/index.json")
        assert member is not None
        index = json.load(member)
    return [m["annotations"][ANNOTATION_SHORT_TAG] for m in index["manifests"]]


def _fresh_pull_of_b(registry: RegistryServer, root: str, tmp_path: Path) -> dict[str, bytes]:
    from flows.pull import run_pull

    fresh = tmp_path / "fresh"
    run_pull(_params(registry, root, fresh, tmp_dir=str(tmp_path / "fresh-work")))
    tags = _short_tags(fresh / "package-moving.tar", "packages/moving/version")
    assert len(tags) == len(set(tags)), tags  # one digest per short tag
    assert "v1.0.0" not in _short_tags(fresh / "package-moving.tar", "packages/moving")
    return _archives(fresh)


def test_rerun_with_the_same_tmp_dir_after_the_source_moved(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """``--tmp-dir`` reused, a new bundle dir: nothing of the first run's indexes survives."""
    from flows.pull import run_pull

    root, work = "rerun-tmp/ee", str(tmp_path / "work")
    seed(registry, root, STATE_A, tmp_path / "images")
    run_pull(_params(registry, root, tmp_path / "first", tmp_dir=work))
    seed(registry, root, STATE_B, tmp_path / "images")
    second = tmp_path / "second"
    run_pull(_params(registry, root, second, tmp_dir=work))
    assert _archives(second) == _fresh_pull_of_b(registry, root, tmp_path)


def test_rerun_into_the_same_bundle_dir_with_its_kept_cache(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A deployment's nightly run: fixed bundle dir, fixed cache dir, the source moved."""
    from flows.pull import run_pull

    root, bundle, work = "rerun-kept/ee", tmp_path / "bundle", str(tmp_path / "cache")
    seed(registry, root, STATE_A, tmp_path / "images")
    run_pull(_params(registry, root, bundle, tmp_dir=work))
    seed(registry, root, STATE_B, tmp_path / "images")
    run_pull(_params(registry, root, bundle, tmp_dir=work))
    assert _archives(bundle) == _fresh_pull_of_b(registry, root, tmp_path)


def test_cli_rerun_with_force_into_the_same_bundle_dir(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """``d8mirror pull B`` then ``d8mirror pull B --force`` after the source moved."""
    root, bundle = "rerun-force/ee", tmp_path / "bundle"
    argv = ["pull", str(bundle), "--source", f"{registry.host}/{root}", "--insecure"]
    seed(registry, root, STATE_A, tmp_path / "images")
    assert main(argv) == 0
    seed(registry, root, STATE_B, tmp_path / "images")
    assert main([*argv, "--force"]) == 0
    assert _archives(bundle) == _fresh_pull_of_b(registry, root, tmp_path)


def _republish(registry: RegistryServer, root: str, work: Path) -> None:
    """Re-point a VEX ``.att`` tag, a release image ``version:vX`` and an extra image's tag
    at the source: versions, main digests and channels stay as they are."""
    repo = f"{root}/packages/moving"
    with registry.client() as client:
        push_image(
            client,
            repo,
            "v1.1.0.att",
            [{"vex.json": canonical_json({"subject": f"{repo}:v1.1.0", "rev": 2})}],
            work,
        )
        push_image(
            client,
            f"{repo}/version",
            "v1.1.0",
            [{"version.json": canonical_json({"version": "v1.1.0"}), "notes.txt": b"republished"}],
            work,
        )
        push_image(
            client, f"{repo}/extra/scanner", "v1", [{"extra/scanner.bin": b"rebuilt scanner"}], work
        )


def test_rerun_with_a_kept_cache_after_tags_were_re_pointed(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Same versions, digests and channels, but a VEX attestation, a release image and an
    extra image re-published: a kept-cache rerun (new bundle dir, then the first bundle dir
    again) gives exactly the source's current state, not the cached fetch."""
    from flows.pull import run_pull

    root, work = "rerun-repoint/ee", str(tmp_path / "work")
    seed(registry, root, STATE_A, tmp_path / "images")
    first = tmp_path / "first"
    run_pull(_params(registry, root, first, tmp_dir=work))
    before = _archives(first)
    _republish(registry, root, tmp_path / "images")
    second = tmp_path / "second"
    run_pull(_params(registry, root, second, tmp_dir=work))
    fresh = tmp_path / "fresh"
    run_pull(_params(registry, root, fresh, tmp_dir=str(tmp_path / "fresh-work")))
    expected = _archives(fresh)
    assert expected["package-moving.tar"] != before["package-moving.tar"]
    assert _archives(second) == expected
    run_pull(_params(registry, root, first, tmp_dir=work))
    assert _archives(first) == expected


def test_a_warm_rerun_right_after_the_first_pull_is_a_cache_hit(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """The first plan of a package cannot name its extra, VEX and release tags; the second
    one names them and asks the source with manifest HEADs only. Nothing changed: the fetch
    is not run again (its layouts stay as they are), nothing but HEADs and lists is asked."""
    from flows.pull import run_pull

    work = tmp_path / "work"
    params: dict[str, Any] = {"include_packages": ["console"], "tmp_dir": str(work)}
    run_pull(_params(registry, "deckhouse/ee", tmp_path / "first", **params))
    index = work / "packages" / "console" / "index.json"
    built = index.stat().st_ino
    registry.clear_requests()
    run_pull(_params(registry, "deckhouse/ee", tmp_path / "second", **params))
    asked = {(method, "/manifests/" in path) for method, path, _ in registry.requests()}
    assert asked <= {("HEAD", True), ("GET", False)}, asked  # HEADs, catalog, tag lists
    heads = [p for m, p, _ in registry.requests() if m == "HEAD" and "/console" in p]
    assert any(p.endswith(".att") for p in heads) and any("/extra/" in p for p in heads)
    assert index.stat().st_ino == built
    assert _archives(tmp_path / "second") == _archives(tmp_path / "first")
