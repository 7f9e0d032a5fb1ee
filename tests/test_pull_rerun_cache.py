"""Q9 (issue 12.3): the bundle directory holds the bundle. A successful pull without
``--tmp-dir`` removes its working dir; ``--tmp-dir`` is a cache the user asked for and stays; a
failed run keeps the working dir, so its retry fetches only what is missing, then removes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultproxy import FaultProxy

from app.commands.pull import check_bundle_dir
from app.main import main
from d8mirror.errors import ConfigError
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

BUNDLE_FILES = [
    "package-code.tar",
    "package-code.tar.sha256",
    "package-versions.tar",
    "package-versions.tar.sha256",
    "report.json",
]


def _pull(host: str, bundle: Path, *flags: str) -> int:
    return main(
        [
            "pull",
            str(bundle),
            "--source",
            f"{host}/deckhouse/ee",
            "--insecure",
            "--include-package",
            "code",
            *flags,
        ]
    )


@pytest.mark.usefixtures("prefect_server")
def test_a_default_pull_leaves_the_bundle_only_and_tmp_dir_is_kept(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    assert _pull(registry.host, bundle, "--dry-run") == 0
    assert not bundle.exists() or list(bundle.iterdir()) == []
    assert _pull(registry.host, bundle) == 0
    assert sorted(p.name for p in bundle.iterdir()) == BUNDLE_FILES  # no .tmp
    kept, cache = tmp_path / "kept", tmp_path / "cache"
    assert _pull(registry.host, kept, "--tmp-dir", str(cache)) == 0
    assert sorted(p.name for p in kept.iterdir()) == BUNDLE_FILES
    assert any((cache / "blobs" / "sha256").iterdir())
    assert (kept / "package-code.tar").read_bytes() == (bundle / "package-code.tar").read_bytes()


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_run_keeps_the_cache_for_its_retry_which_then_removes_it(
    registry: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = "deckhouse/ee/packages/console"
    with registry.client() as client:
        layer = str(client.get_manifest(repo, "v1.2.0").json()["layers"][-1]["digest"])
    bundle = tmp_path / "bundle"
    monkeypatch.setenv("D8_MIRROR_RETRY_BASE_DELAY", "0.01")
    with FaultProxy(
        registry.host, rate=1.0, kinds=("flip",), match=lambda r: r.path.endswith(layer)
    ) as proxy:
        assert (
            main(
                [
                    "pull",
                    str(bundle),
                    "--source",
                    f"{proxy.host}/deckhouse/ee",
                    "--insecure",
                    "--include-package",
                    "console",
                    "--include-package",
                    "code",
                ]
            )
            == 1
        )
    assert any((bundle / ".tmp" / "blobs" / "sha256").iterdir())  # kept for the retry
    registry.clear_requests()
    assert (
        main(
            [
                "pull",
                str(bundle),
                "--source",
                f"{registry.host}/deckhouse/ee",
                "--insecure",
                "--include-package",
                "console",
                "--include-package",
                "code",
                "--force",
            ]
        )
        == 0
    )
    blob_gets = [p for method, p, _ in registry.requests() if method == "GET" and "/blobs/" in p]
    assert any(p.endswith(layer) for p in blob_gets)
    assert not [p for p in blob_gets if "/packages/code/" in p], "code was fetched again"
    assert not (bundle / ".tmp").exists()


def test_the_working_dir_inside_a_new_bundle_dir_is_not_content(tmp_path: Path) -> None:
    """Issue 13: ``pull NEW --tmp-dir NEW/work``; the CLI's warm-up creates the store before
    the command checks that NEW is empty."""
    bundle = tmp_path / "new"
    (bundle / "work" / "blobs" / "sha256").mkdir(parents=True)
    check_bundle_dir(bundle, force=False, dry_run=False, tmp_dir=bundle / "work")
    check_bundle_dir(bundle, force=False, dry_run=False, tmp_dir=bundle / "work" / "x")
    (bundle / "package-a.tar").write_bytes(b"")
    with pytest.raises(ConfigError, match="not empty"):
        check_bundle_dir(bundle, force=False, dry_run=False, tmp_dir=bundle / "work")
    (bundle / "package-a.tar").unlink()
    with pytest.raises(ConfigError, match=r"not empty \(work\)"):
        check_bundle_dir(bundle, force=False, dry_run=False, tmp_dir=tmp_path / "other")
