"""One CLI run's hold on the process: what a command opens around the flow it runs, and closes
again in :meth:`Session.close` (or on leaving ``with Session() as session``).

    early API server   Prefect's ephemeral server, started before Prefect is imported
                       (:mod:`app.local_api`); stopped on close, after Prefect's log and
                       event workers have sent what they hold
    credentials        explicit credentials from the command line, handed to the tasks
                       through :func:`tasks.runtime.give_credentials` (never ``os.environ``,
                       never a flow parameter); forgotten on close
    warm-up            work started while the server boots (:mod:`app.warmup`), stopped
                       when the flow takes over, finished (summary printed) when it ends
    stop request       Ctrl+C / SIGTERM while a flow runs (:mod:`app.signals`)
    console            Prefect's console log lines while a flow runs, quiet unless verbose
                       (:func:`app.console.quiet_console`)

Several commands may run in one session (the demo pulls and pushes through one server).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING

from d8mirror.registry import Credentials
from tasks import runtime

from . import local_api
from .signals import stop_on_signals
from .warmup import finish_warm_up, start_warm_up

if TYPE_CHECKING:
    from .warmup import Warmer


class Session:
    """The early API server, the explicit credentials and the warm-up of a CLI run."""

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self._server: local_api.EarlyServer | None = None
        self._warmer: Warmer | None = None
        self._given: set[str] = set()
        self._started: datetime | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def give_credentials(self, registry: str, credentials: Credentials | None) -> None:
        """Use ``credentials`` for ``registry`` in this process until the session closes
        (None: nothing given, the tasks resolve them from blocks, environment, docker config)."""
        if credentials is None:
            return
        runtime.give_credentials(registry, credentials)
        self._given.add(registry)

    def start(self, flow_module: str, warm_up: Callable[[], Warmer | None] | None = None) -> None:
        """Start the early API server (unless an API is configured or it already runs) and
        the warm-up, then import ``flow_module`` (and Prefect) while the server boots."""
        if self._server is None or self._server.process is None:
            self._server = local_api.start_early()
        if self._server is not None and warm_up is not None and self._warmer is None:
            self._warmer = start_warm_up(warm_up)
        importlib.import_module(flow_module)

    @contextmanager
    def running(self, *, graceful_stop: bool = False) -> Iterator[None]:
        """Where the flow runs: against the early server once it is ready (the warm-up stops
        there: the flow takes over), Prefect's console quiet unless verbose; with
        ``graceful_stop``, Ctrl+C and SIGTERM request a stop (:mod:`app.signals`)."""
        from .console import quiet_console

        try:
            with local_api.recording_api(self._server), quiet_console(self.verbose):
                if self._started is None:
                    self._started = datetime.now(UTC)
                if self._warmer is not None:
                    self._warmer.stop()
                if not graceful_stop:
                    yield
                    return
                with stop_on_signals():
                    yield
        finally:
            self._finish_warm_up()

    def _finish_warm_up(self) -> None:
        warmer, self._warmer = self._warmer, None
        if warmer is not None:
            finish_warm_up(warmer)

    def close(self) -> None:
        """Finish the warm-up, stop the early server, forget the credentials given."""
        server, self._server = self._server, None
        try:
            self._finish_warm_up()
        finally:
            if server is not None and server.process is not None:
                local_api.drain_prefect_workers()
                if self._started is not None and server.ready:
                    local_api.wait_for_records(server, self._started)
                server.stop()
            for registry in self._given:
                runtime.give_credentials(registry, None)
            self._given.clear()
