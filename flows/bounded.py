"""The one way d8mirror's flows bound their concurrency.

Every flow runs its tasks on a :class:`~prefect.task_runners.ThreadPoolTaskRunner` of
:data:`RUNNER_THREADS` threads (:func:`task_runner`; the pool starts threads only as work
arrives, so a large ceiling costs nothing), and every fan-out goes through
:func:`submit_bounded`, which keeps at most ``limit`` of its tasks in flight. The limit comes
from the run's parameters (``concurrency``, ``file_concurrency``…), so the same bound holds
for a CLI run, a deployment run and the UI's Retry alike, with no per-call task runner and
no ``with_options``.

A fan-out whose items start other work as they finish (pull: pack a package as soon as its
fetch ends) passes ``then``; that follow-up work runs beside the bounded items, on the same
runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

T = TypeVar("T")

#: Threads of every flow's task runner: above any sum of bounds a run can ask for (fan-outs
#: are bounded by their own parameters, at most 64, plus their follow-ups).
RUNNER_THREADS = 160


def task_runner() -> TaskRunner[Any]:
    """The task runner of every d8mirror flow (see the module docstring); typed as the
    ``TaskRunner`` that ``@flow(task_runner=...)`` accepts."""
    return ThreadPoolTaskRunner(max_workers=RUNNER_THREADS)


def submit_bounded(
    submit: Callable[[T], PrefectFuture[Any]],
    items: Sequence[T],
    limit: int,
    *,
    then: Callable[[int, PrefectFuture[Any]], None] | None = None,
) -> list[PrefectFuture[Any]]:
    """Submit ``submit(item)`` for every item, in order, at most ``limit`` in flight; call
    ``then(index, future)`` as each one finishes (in the flow's thread). Returns the futures
    in item order once all of them have finished (failed ones included: read their states)."""
    futures: list[PrefectFuture[Any] | None] = [None] * len(items)
    waiting = list(range(len(items)))
    running: dict[PrefectFuture[Any], int] = {}
    while waiting or running:
        while waiting and len(running) < max(1, limit):
            i = waiting.pop(0)
            futures[i] = submit(items[i])
            running[futures[i]] = i  # type: ignore[index]
        done = next(as_completed(list(running)))
        i = running.pop(done)
        if then is not None:
            then(i, done)
    wait([f for f in futures if f is not None])
    return [f for f in futures if f is not None]
