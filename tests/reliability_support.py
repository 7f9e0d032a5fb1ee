"""Helpers of the reliability tests: the CLI as a child process (against the session's Prefect
test server, so no ephemeral server starts), bounded waits, target-registry snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from testbed.registry_server import RegistryServer

D8MIRROR = str(Path(sys.executable).with_name("d8mirror"))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI child: the harness' API, no inherited credentials."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("D8_MIRROR_")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    env.update(extra)
    return env


def start_cli(args: Sequence[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [D8MIRROR, *args],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=cli_env(**env),
            start_new_session=True,
        )


def run_cli(args: Sequence[str], log: Path, timeout: float = 180, **env: str) -> int:
    process = start_cli(args, log, **env)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_hard(process)
        raise


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it runs in its own session) and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"child exited ({process.returncode}) before {what}:\n{tail}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def tags_and_digests(server: RegistryServer, root: str) -> dict[str, str]:
    """``repo:tag`` -> digest of every repository under ``root`` (relative names)."""
    found: dict[str, str] = {}
    with server.client() as client:
        for repo in client.list_repositories():
            if repo != root and not repo.startswith(root + "/"):
                continue
            for tag in client.list_tags(repo):
                found[f"{repo[len(root) :]}:{tag}"] = client.head_manifest(repo, tag).digest
    return found
