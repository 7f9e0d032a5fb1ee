"""flows.bounded: the one way flows bound a fan-out (at most ``limit`` tasks in flight)."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow, task

from flows.bounded import submit_bounded, task_runner

_lock = threading.Lock()
_in_flight = 0
_peak = 0


@task
def _sleepy(i: int) -> int:
    global _in_flight, _peak
    with _lock:
        _in_flight += 1
        _peak = max(_peak, _in_flight)
    time.sleep(0.2)
    with _lock:
        _in_flight -= 1
    if i == 3:
        raise ValueError("item 3 fails")
    return i * 10


@flow(task_runner=task_runner())
def _fan_out(limit: int) -> tuple[list[str], list[int], int]:
    finished: list[int] = []
    futures = submit_bounded(
        _sleepy.submit, list(range(7)), limit, then=lambda i, _f: finished.append(i)
    )
    states = [f.state.type.value for f in futures]
    return states, finished, _peak


@pytest.mark.usefixtures("prefect_server")
def test_at_most_limit_in_flight_every_item_run_and_reported_in_order() -> None:
    global _peak
    _peak = 0
    states, finished, peak = _fan_out(2)
    assert peak == 2
    assert sorted(finished) == list(range(7))
    assert states == ["COMPLETED"] * 3 + ["FAILED"] + ["COMPLETED"] * 3
