"""A process-wide stop request (Ctrl+C in the CLI): fetchers stop at the next image, the flow
packs what completed (spec §6.5)."""

from __future__ import annotations

import threading

_stop = threading.Event()


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def reset() -> None:
    _stop.clear()
