"""The Prefect API a CLI run records into, started before Prefect is imported.

With no ``PREFECT_API_URL`` configured, Prefect starts an ephemeral API server (a uvicorn
subprocess on the SQLite database under ``PREFECT_HOME``) when the first flow run asks for
it, that is after the whole client has been imported: ~1.5 s of imports, then ~4 s of
server start-up (mostly the server's own imports), one after the other. The CLI knows from
its arguments that it is about to run a flow, so its session (:class:`app.session.Session`,
which owns the server and stops it when it closes) starts that same server (same command,
same environment, same database: the same records) as its first act and loads Prefect
while the server boots. A CLI run also turns off flow-run heartbeats for the server it
owns: they serve crash detection by a long-lived server, and the heartbeat thread's
1-second sleep holds up the end of every run.

A configured API (environment, profile, ``prefect.toml``) always wins: the early server is
then stopped unused. The server is started in its own session (Ctrl+C reaches the CLI,
which packs what completed and still reports to it), dies with the CLI on Linux even when
the CLI is killed, and is stopped by the session (or at the latest when the process exits).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from d8mirror.errors import ConfigError
from d8mirror.memory import ARENAS

#: What Prefect's own ``SubprocessASGIServer`` sets for its ephemeral server.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
_PR_SET_PDEATHSIG = 1
#: Source/registry and S3 credentials stay out of the server's environment.
_CREDENTIAL_PREFIXES = ("D8_MIRROR_", "AWS_")
#: Services of a long-lived server that a one-shot CLI run has no use for (deployment schedules,
#: late, paused and crashed runs, worker health, cancellation clean-up, automations, whose
#: actions would outlive the server, database vacuum): off for the server the CLI owns, unless
#: the environment sets them. The event persister and the task-run recorder, which keep the
#: run's records, stay on.
_ONE_SHOT_SERVICES = {
    **{
        f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
        for name in (
            "CANCELLATION_CLEANUP",
            "CLEANUP_RECONCILER",
            "FOREMAN",
            "LATE_RUNS",
            "PAUSE_EXPIRATIONS",
            "REPOSSESSOR",
            "SCHEDULER",
            "TRIGGERS",
        )
    },
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "[]",
}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _server_environment() -> dict[str, str]:
    """This process's environment without the credentials the server never needs, with the
    CLI's cap on malloc arenas and without the services a one-shot run does not use (each
    unless the environment sets it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CREDENTIAL_PREFIXES)}
    for key, value in {"MALLOC_ARENA_MAX": str(ARENAS), **_ONE_SHOT_SERVICES}.items():
        env.setdefault(key, value)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EarlyServer:
    """Prefect's ephemeral API server, started by the CLI before it imports Prefect."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.restarts = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> EarlyServer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**_server_environment(), **_SERVER_ENV},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # preexec_fn is only fork-safe while this is the sole thread (the CLI's case)
            preexec_fn=_die_with_parent
            if sys.platform == "linux" and threading.active_count() == 1
            else None,
        )
        if not self.restarts:
            atexit.register(self.stop)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/health`` until the server answers (ConfigError naming what to do)."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while not self.ready:
                self._check_alive()
                with suppress(httpx.HTTPError):
                    self.ready = client.get(f"{self.api_url}/health").status_code == 200
                if self.ready:
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError(
                        f"the local Prefect API server did not answer in {timeout:.0f} s; "
                        "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or point "
                        "PREFECT_API_URL at a running server"
                    )
                time.sleep(0.05)

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        code = None if self.process is None else self.process.returncode
        if self.process is not None and self.restarts == 0:  # e.g. the port was taken
            self.restarts += 1
            self.port = _free_port()
            self.start()
            return
        home = os.environ.get("PREFECT_HOME", "~/.prefect")
        raise ConfigError(
            f"the local Prefect API server exited (code {code}) before it was "
            f"ready; check that PREFECT_HOME ({home}) is writable, or point "
            "PREFECT_API_URL at a running server"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        self.ready = False
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def configured_api_url() -> str | None:
    """The API URL Prefect's settings name (environment, profile, ``prefect.toml``), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def start_early() -> EarlyServer | None:
    """The ephemeral server, started now; None when an API is configured."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect" in sys.modules and configured_api_url():
        return None
    # The server opens PREFECT_HOME/prefect.db at once; Prefect's client creates the dir only
    # later, while it loads (a fresh machine has no ~/.prefect yet).
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create PREFECT_HOME {home}: {exc.strerror or exc}; set "
            "PREFECT_HOME to a writable directory"
        ) from exc
    return EarlyServer().start()


@contextmanager
def recording_api(server: EarlyServer | None) -> Iterator[None]:
    """Run flows against ``server``, unless Prefect's settings name an API (``server`` is
    then stopped unused)."""
    if server is None or server.process is None:
        yield
        return
    if configured_api_url():
        server.stop()
        yield
        return
    from prefect.settings import get_current_settings, temporary_settings

    server.wait_ready(float(get_current_settings().server.ephemeral.startup_timeout_seconds))
    with temporary_settings(updates={"api.url": server.api_url, "flows.heartbeat_frequency": None}):
        yield


#: Task-run states a finished run's records may still show while the server records its events.
_UNSETTLED = ["SCHEDULED", "PENDING", "RUNNING"]


def wait_for_records(server: EarlyServer, since: datetime, timeout: float = 5.0) -> None:
    """Wait (at most ``timeout``) until the server has recorded every task run created since
    ``since`` in a final state. Task runs are recorded from the client's events, which the
    server's task-run recorder writes in batches a moment after they arrive: stopping the
    server at once could leave the last task of a completed run recorded as Running."""
    import httpx

    query = {
        "task_runs": {
            "expected_start_time": {"after_": since.isoformat()},
            "state": {"type": {"any_": _UNSETTLED}},
        }
    }
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                answer = client.post(f"{server.api_url}/task_runs/count", json=query)
            except httpx.HTTPError:
                return
            if answer.status_code != 200 or answer.json() == 0:
                return
            time.sleep(0.05)


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send what Prefect's log and event workers still hold, before their server stops."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout, at_exit=False)
    EventsWorker.drain_all(timeout=timeout, at_exit=False)
