"""The CLI's early Prefect API server: records kept, nothing left running, a configured API wins."""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import local_api
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

DEMO_ROOT = "deckhouse/ee"
REPO = Path(__file__).resolve().parent.parent


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


def _dry_run(registry: RegistryServer, bundle: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.main",
        "pull",
        str(bundle),
        "--source",
        f"{registry.host}/{DEMO_ROOT}",
        "--insecure",
        "--dry-run",
    ]


def _servers_of(home: Path) -> list[int]:
    """Pids of uvicorn processes whose environment names this PREFECT_HOME."""
    marker = f"PREFECT_HOME={home}".encode() + b"\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"uvicorn" in cmdline and marker in environ:
            pids.append(int(entry.name))
    return pids


def _task_runs(home: Path) -> list[str]:
    with sqlite3.connect(home / "prefect.db") as db:
        return [state for (state,) in db.execute("select state_type from task_run")]


def _flow_runs(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "prefect.db") as db:
        return list(
            db.execute(
                "select flow.name, flow_run.state_type from flow_run join flow "
                "on flow.id = flow_run.flow_id"
            )
        )


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_cli_run_records_into_prefect_home_and_leaves_no_server(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        _dry_run(registry, tmp_path / "bundle"),
        env=_cli_env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "Pull plan (dry-run)" in done.stdout + done.stderr
    assert _flow_runs(home) == [("mirror-pull", "COMPLETED")]
    assert _task_runs(home) and set(_task_runs(home)) == {"COMPLETED"}  # recorded from events
    assert _servers_of(home) == []


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, PR_SET_PDEATHSIG")
def test_killed_cli_takes_its_server_down(registry: RegistryServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = subprocess.Popen(
        _dry_run(registry, tmp_path / "bundle"),
        env=_cli_env(home),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _servers_of(home):
            assert time.monotonic() < deadline, "the CLI never started its API server"
            assert cli.poll() is None, "the CLI ended before its server was seen"
            time.sleep(0.02)
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        deadline = time.monotonic() + 30
        while _servers_of(home):
            assert time.monotonic() < deadline, "the server outlived its killed CLI"
            time.sleep(0.1)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@pytest.mark.usefixtures("prefect_server")
def test_a_configured_api_wins_over_the_early_server(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    # the harness's server is configured (settings, not environment)
    assert local_api.start_early() is None

    api_url = get_current_settings().api.url
    assert api_url
    home = tmp_path / "home"
    env = {**_cli_env(home), "PREFECT_API_URL": api_url}
    done = subprocess.run(
        _dry_run(registry, tmp_path / "bundle"),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert any(
        run.state_type is not None
        and run.state_type.value == "COMPLETED"
        and run.parameters.get("params", {}).get("bundle_dir") == str(tmp_path / "bundle")
        for run in runs
    )
    assert not (home / "prefect.db").exists()


def test_the_server_environment_carries_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D8_MIRROR_SOURCE_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    env = local_api._server_environment()
    assert "hunter2" not in env.values() and "s3cret" not in env.values()
    assert env["PREFECT_HOME"] == os.environ["PREFECT_HOME"]


def test_the_server_gets_the_clis_malloc_arena_cap_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert local_api._server_environment()["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert local_api._server_environment()["MALLOC_ARENA_MAX"] == "8"


def test_one_shot_server_runs_no_scheduler_unless_asked_and_keeps_its_recorders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", raising=False)
    env = local_api._server_environment()
    assert env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] == "false"
    assert not any("TASK_RUN_RECORDER" in k or "EVENT_PERSISTER" in k for k in env)
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "true")
    assert local_api._server_environment()["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] == "true"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_cli_caps_its_malloc_arenas() -> None:
    from d8mirror.memory import limit_malloc_arenas

    assert limit_malloc_arenas(2) is True


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_prefect_home_that_does_not_exist_yet_is_created(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """A fresh machine: the server opens PREFECT_HOME/prefect.db before Prefect's client
    would have created the directory."""
    home = tmp_path / "fresh" / "prefect-home"
    done = subprocess.run(
        _dry_run(registry, tmp_path / "bundle"),
        env=_cli_env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert _flow_runs(home) == [("mirror-pull", "COMPLETED")]
