"""Support for the operations tests (tests/test_ops_*.py): ONE real ``prefect server start``
(with its UI) per pytest session, shared by every ops module, plus serve/worker subprocesses.

The server is started lazily by the first ops module and stopped at the end of the session
(``config.add_cleanup``), each process by its own pid/process group. Modules enter
``use_server`` so in-process clients talk to it; subprocesses get ``child_env``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from testbed.registry_server import free_port

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ARTIFACTS = PROJECT / "tests" / "artifacts"


def _quiet_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONPATH=str(PROJECT))
    env.update(extra or {})
    return env


class Process:
    """A subprocess in its own session, output to a log file, stopped by its own pid."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path = PROJECT
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._sink: IO[bytes] = self.log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_text(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {needle!r} in {timeout}s: {self.text()[-3000:]}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)  # our own session: it and its runs
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._sink.close()


class PrefectServer:
    """``prefect server start --host 127.0.0.1`` with a fresh PREFECT_HOME (SQLite)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def start(self, timeout: float = 120) -> PrefectServer:
        env = _quiet_env(
            {
                "PREFECT_HOME": str(self.directory / "home"),
                "PREFECT_UI_ENABLED": "true",
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
        )
        env.pop("PREFECT_API_URL", None)
        self.process = Process(
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env,
            self.directory,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {self.process.text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


_server: PrefectServer | None = None


def shared_server(config: pytest.Config) -> PrefectServer:
    """The session's one ops server (started on first use, stopped at session end)."""
    global _server
    if _server is None:
        _server = PrefectServer(Path(tempfile.mkdtemp(prefix="d8mirror-ops-server-"))).start()
        config.add_cleanup(_stop_shared)
    return _server


def _stop_shared() -> None:
    global _server
    if _server is not None:
        _server.stop()
        shutil.rmtree(_server.directory, ignore_errors=True)
        _server = None


def _drain_workers() -> None:
    """Event and log workers keep the API URL they were created with: restart them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=10)
    APILogWorker.drain_all(timeout=10)


@contextmanager
def use_server(server: PrefectServer) -> Iterator[PrefectServer]:
    """In-process Prefect clients, events and logs go to ``server`` inside the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _drain_workers()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server
        _drain_workers()


def child_env(server: PrefectServer, **extra: str) -> dict[str, str]:
    """Environment of serve/worker subprocesses: this server, fast polling, same results."""
    return _quiet_env(
        {
            "PREFECT_API_URL": server.api_url,
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            **extra,
        }
    )


def wait_for_run(flow_run_id: Any, timeout: float = 180) -> Any:
    """Poll the flow run until its state is final; returns the FlowRun."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} still {run.state} after {timeout}s")
            time.sleep(0.5)


def bundle_archives(bundle: Path) -> dict[str, bytes]:
    """Every archive and sidecar of a bundle (not report.json, whose timings differ)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != "report.json"
    }


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
)


def chromium() -> str | None:
    return shutil.which("chromium")


def browse(url: str, screenshot: Path) -> str:
    """Headless Chromium: save a screenshot of ``url`` and return its rendered text."""
    import re

    binary = chromium()
    assert binary is not None
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    texts = []
    for mode in (f"--screenshot={screenshot}", "--dump-dom"):
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", mode, url],
                capture_output=True,
                text=True,
                timeout=120,
            )
        texts.append(done.stdout)
    assert screenshot.stat().st_size > 10_000, f"empty screenshot of {url}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", texts[1]))
