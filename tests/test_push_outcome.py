"""What a push run leaves behind when things go wrong, through the mirror-push flow or the CLI
against real registries: the write check proves push permission every time and retries like any
request (12.5); a failed layout withholds its item's discovery tag and a rerun completes it
(12.4, 13); Ctrl+C / SIGTERM end a push gracefully with a summary and exit 0 (12.4)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request, Response
from push_bundle_builder import PackageSpec, build_bundle, damage_member, digest_or_none
from push_stages import given_credentials

from app.main import main
from d8mirror.push import tinyimage
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from d8mirror.registry import Credentials
from testbed.registry_server import RegistryServer

_ns = itertools.count()
REPO_ROOT = Path(__file__).resolve().parent.parent
DISCOVERY = tinyimage.build(DISCOVERY_LABEL).digest


@pytest.fixture(autouse=True)
def _checks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIRROR_BYPASS_ACCESS_CHECKS", raising=False)


@pytest.fixture(scope="module")
def readonly_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Token auth: ``pusher`` may push, ``reader`` is granted only pull by the token server."""
    with RegistryServer(
        tmp_path_factory.mktemp("ro-registry"),
        auth="token",
        users={"pusher": "push-pw", "reader": "read-pw"},
        read_only_users={"reader"},
    ) as server:
        yield server


def _root(name: str) -> str:
    return f"{name}-{next(_ns)}/ee"


def _params(bundle: Path, target: str, **extra: Any) -> Any:
    from tasks.push import PushParameters

    return PushParameters(bundle_dir=str(bundle), registry=target, insecure=True, **extra)


# -- 12.5: the write check --------------------------------------------------------------------
@pytest.mark.usefixtures("prefect_server")
def test_read_only_credentials_fail_the_write_check_even_on_a_populated_target(
    readonly_registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.push import run_push

    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    target = f"{readonly_registry.host}/{_root('ro')}"
    # everything is already there: nothing would need a write, yet reading is not writing
    with given_credentials(readonly_registry.host, Credentials("pusher", "push-pw")):
        assert run_push(_params(bundle, target)).ok
    capsys.readouterr()
    code = main(["push", str(bundle), target, "--insecure", "-u", "reader", "-p", "read-pw"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "registry credentials validation failure" in err
    assert "read-pw" not in err


@pytest.mark.usefixtures("prefect_server")
def test_write_check_retries_a_rate_limited_answer_and_leaves_nothing_behind(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push

    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    root = _root("wc429")
    answered: list[str] = []

    def rate_limit_first_two(request: Request) -> Response | None:
        # the write check is the push's first request to the target repository
        if request.path.startswith(f"/v2/{root}/") and len(answered) < 2:
            answered.append(f"{request.method} {request.path}")
            return Response.error(429, "TOOMANYREQUESTS", [("Retry-After", "0")])
        return None

    with FaultProxy(registry2.host, intercept=rate_limit_first_two) as proxy:
        result = run_push(_params(bundle, f"{proxy.host}/{root}"))
    assert result.ok, result
    assert len(answered) == 2, answered
    assert digest_or_none(registry2, root, "d8WriteCheck") is None  # no image written
    assert digest_or_none(registry2, f"{root}/packages", "console") == DISCOVERY


# -- 12.4 / 13: discovery tags only for items that landed -------------------------------------
def _bundle_with_a_damaged_viewer_layer(tmp_path: Path) -> tuple[Path, Path]:
    """(good bundle, same bundle with the layer of viewer's extra image ``outcome`` damaged:
    the registry refuses its upload, so that one layout fails; the extra's name is this
    test's own, so no other test has put that blob into the shared target already)."""
    bundle, _ = build_bundle(
        tmp_path, [PackageSpec("console"), PackageSpec("viewer", extras={"outcome": "1.0"})]
    )
    scanner = tmp_path / "work/viewer/extra/outcome"
    manifest_digest = json.loads((scanner / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((scanner / "blobs/sha256" / manifest_digest[7:]).read_text())
    layer_hex = manifest["layers"][0]["digest"][7:]
    broken = tmp_path / "broken"
    broken.mkdir()
    for archive in bundle.glob("*.tar"):
        damage_member(archive, broken / archive.name, layer_hex)
    return bundle, broken


@pytest.mark.usefixtures("prefect_server")
def test_a_package_with_a_failed_layout_gets_no_discovery_tag_until_a_rerun(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import PushFailed, run_push

    good, broken = _bundle_with_a_damaged_viewer_layer(tmp_path)
    root = _root("disc")
    target = f"{registry2.host}/{root}"
    with pytest.raises(PushFailed) as failure:
        run_push(_params(broken, target, concurrency=2))
    message = str(failure.value)
    assert "packages/viewer/extra/outcome" in message
    assert "packages:viewer" in message  # the withheld tag is named
    # the failed layout and its cause, one item each, for the CLI's error block
    assert [layout for layout, _ in failure.value.items] == ["packages/viewer/extra/outcome"]
    assert all(cause for _, cause in failure.value.items)
    assert digest_or_none(registry2, f"{root}/packages", "console") == DISCOVERY
    assert digest_or_none(registry2, f"{root}/packages", "viewer") is None
    # viewer's complete layouts did land; only its announcement is withheld
    assert digest_or_none(registry2, f"{root}/packages/viewer", "v1.0.0") is not None

    result = run_push(_params(good, target, concurrency=2))
    assert result.ok and result.withheld == ()
    assert digest_or_none(registry2, f"{root}/packages", "viewer") == DISCOVERY


# -- 12.4: Ctrl+C and SIGTERM -----------------------------------------------------------------
def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        D8MIRROR_WARM_UP="0",
        PYTHONPATH=str(REPO_ROOT),
    )
    env.pop("MIRROR_BYPASS_ACCESS_CHECKS", None)
    return env


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_upload_ends_the_push_gracefully_and_a_rerun_completes_it(
    registry2: RegistryServer, tmp_path: Path, signum: signal.Signals
) -> None:
    from flows.push import run_push

    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    root = _root("sig")

    def blob_commit(request: Request) -> bool:
        return request.method == "PUT" and "/blobs/uploads/" in request.path

    with FaultProxy(registry2.host, hold=blob_commit, hold_timeout=120) as proxy:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.main",
                "push",
                str(bundle),
                f"{proxy.host}/{root}",
                "--insecure",
                "--concurrency",
                "2",
                "--blob-workers",
                "2",
            ],
            cwd=REPO_ROOT,
            env=_cli_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while proxy.holding == 0 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.holding > 0, process.communicate(timeout=30)[0]
            held = proxy.holding
            process.send_signal(signum)
            time.sleep(1.0)
            proxy.release()  # the uploads in flight finish
            output, _ = process.communicate(timeout=180)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        commits = proxy.completed("PUT", "/blobs/uploads/")
    assert process.returncode == 0, output
    assert "Push was cancelled" in output, output
    assert "TerminationSignal" not in output and "KeyboardInterrupt" not in output, output
    assert len(commits) >= held  # every held upload was let through, not cut
    assert digest_or_none(registry2, f"{root}/packages", "console") is None  # no discovery
    assert digest_or_none(registry2, f"{root}/packages", "viewer") is None

    result = run_push(_params(bundle, f"{registry2.host}/{root}"))
    assert result.ok, result
    for (repo, tag), digest in expected.tags.items():
        assert digest_or_none(registry2, f"{root}/{repo}", tag) == (digest or DISCOVERY)
