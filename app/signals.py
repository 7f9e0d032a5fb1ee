"""Ctrl+C and SIGTERM as a graceful stop: the signal handlers that set the process's stop
request (:func:`tasks.runtime.request_stop`); fetchers stop at the next image or blob piece,
the flow packs what completed (R-6.5)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from tasks.runtime import request_stop, stop_requested


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """First SIGINT/SIGTERM: ask the run to stop, finish what is in flight and keep what
    completed (a pull packs it); the next one of the same kind aborts (KeyboardInterrupt, or
    SIGTERM's default: terminate)."""
    request_stop()
    again = "press Ctrl+C again" if signum == signal.SIGINT else "send SIGTERM again"
    # written, not printed: inside a flow run Prefect turns print() into a log line, which the
    # CLI's default log level hides
    sys.stderr.write(
        f"\nOperation cancelled by user: finishing what is in flight and keeping "
        f"what completed ({again} to abort)\n"
    )
    sys.stderr.flush()
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM request a graceful stop; the handlers found are put
    back after (main thread only; elsewhere a no-op)."""
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    except ValueError:
        pass
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_on_signals_hook(*_args: Any) -> None:
    """A flow ``on_running`` hook: Prefect's engine replaces the SIGTERM handler for the run
    (its handler crashes the run, and the task threads then finish their downloads before the
    process can exit); put the graceful stop back, unless a stop was already requested."""
    if stop_requested():
        return
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, _on_signal)
