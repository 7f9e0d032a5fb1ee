"""Per-request retries of transient failures: a time budget, exponential backoff with jitter.

    policy = RetryPolicy(budget=90.0)
    digest = policy.call(lambda: client.head_manifest(repo, tag).digest,
                         what=f"resolve {repo}:{tag}")

Only errors for which :func:`d8mirror.errors.is_retryable` is true are retried (429, 5xx,
network faults, digest mismatches); everything else (401, 403, 404, TLS, bad input, local
content that contradicts its descriptor) propagates at once. A 429's ``Retry-After`` is
honoured, capped at ``max_retry_after``.

The patience is time-based, like d8's (an image pull 5 x 10 s, a manifest push 4 x 3 s): a
failing operation is retried until ``budget`` seconds have passed since its first failure, the
last try landing at the end of the budget, so a registry blip shorter than the budget is
survived. Whenever bytes flow during a try (:func:`note_progress`, called by the registry
client as the body of a successful answer arrives) the budget starts again: a long download
that breaks now and then is not given up. The whole operation can also be bounded by an
absolute ``deadline`` (e.g. the end of an image's time): no try starts after it. Content that
arrives corrupted is not a blip: a digest mismatch is tried at most ``integrity_attempts``
times. ``attempts`` optionally caps the
number of tries as well. When the policy gives up, the last error propagates unchanged in
type, its message saying how many attempts were made over how long.

Configuration: :func:`default_policy` reads ``D8_MIRROR_RETRY_BUDGET`` (a Go duration such as
``90s`` or ``2m``, or seconds), ``D8_MIRROR_RETRY_ATTEMPTS`` (a cap) and
``D8_MIRROR_RETRY_BASE_DELAY`` (seconds) from the environment; every core entry point also
takes an explicit ``retry=`` policy.

The retry unit is one request (or one whole blob transfer, which itself resumes a cut body
once), so a fault costs one request, not a whole package. The clock is injected (``sleep``,
``clock``, ``random``) so tests need not wait.
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from d8mirror.durations import parse_go_duration
from d8mirror.errors import (
    ConfigError,
    DigestMismatchError,
    RateLimitedError,
    add_context,
    is_retryable,
)

log = logging.getLogger("d8mirror.retry")

T = TypeVar("T")

_flow = threading.local()


def note_progress(nbytes: int) -> None:
    """Record that ``nbytes`` moved on this thread (resets the retry budget of a running
    :meth:`RetryPolicy.call` on the same thread)."""
    if nbytes > 0:
        _flow.moved = getattr(_flow, "moved", 0) + nbytes


def _moved() -> int:
    moved: int = getattr(_flow, "moved", 0)
    return moved


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how patiently a transient failure is retried."""

    attempts: int | None = None  #: cap on tries, the first one included (1 = no retry)
    budget: float = 90.0  #: seconds of failing (without bytes flowing) before giving up
    base_delay: float = 0.2  #: seconds before the 2nd try; doubles per try
    max_delay: float = 10.0  #: cap of the exponential delay
    jitter: float = 0.5  #: up to this fraction of the delay is added at random
    max_retry_after: float = 30.0  #: cap of a server's Retry-After
    integrity_attempts: int = 5  #: tries of a transfer whose bytes keep hashing wrong
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.integrity_attempts < 1:
            raise ValueError("retry integrity_attempts must be at least 1")
        if (
            self.base_delay < 0
            or self.max_delay < 0
            or self.jitter < 0
            or self.max_retry_after < 0
            or self.budget < 0
        ):
            raise ValueError("retry budget, delays and jitter must not be negative")

    def delay(self, failed_attempt: int, exc: BaseException) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (failed_attempt - 1))
        backoff += backoff * self.jitter * self.random()
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            backoff = max(backoff, min(exc.retry_after, self.max_retry_after))
        return backoff

    def call(
        self, operation: Callable[[], T], *, what: str = "", deadline: float | None = None
    ) -> T:
        """``operation()``, retried on transient errors; see the module docstring. No try
        starts after ``deadline`` (a ``clock`` time, e.g. the end of an image's time)."""
        started = self.clock()
        since: float | None = None  # when the current budget started (first failure)
        slept = 0.0  # seconds slept since then (budgets an injected sleep)
        attempt = corrupt = 0
        while True:
            attempt += 1
            moved = _moved()
            try:
                return operation()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                now = self.clock()
                if since is None or _moved() != moved:
                    since, slept = now, 0.0
                corrupt += isinstance(exc, DigestMismatchError)
                left = self.budget - max(now - since, slept)
                if deadline is not None:
                    left = min(left, deadline - now)
                if (
                    left <= 0
                    or corrupt >= self.integrity_attempts
                    or (self.attempts is not None and attempt >= self.attempts)
                ):
                    if attempt > 1:
                        _mention_attempts(exc, attempt, now - started)
                    raise
                wait = min(self.delay(attempt, exc), left)
                log.info(
                    "%s failed (attempt %d, %.0f s of the %.0f s retry budget left), "
                    "retrying in %.2f s: %s",
                    what or "request",
                    attempt,
                    left,
                    self.budget,
                    wait,
                    exc,
                )
                self.sleep(wait)
                slept += wait


#: The default of the core: retries for up to 90 s after the first failure, 0.2 s, 0.4 s,
#: 0.8 s ... 10 s apart (plus jitter).
DEFAULT_RETRY = RetryPolicy()
#: A single try (for callers that retry at a higher level).
NO_RETRY = RetryPolicy(attempts=1)

ENV_ATTEMPTS = "D8_MIRROR_RETRY_ATTEMPTS"
ENV_BASE_DELAY = "D8_MIRROR_RETRY_BASE_DELAY"
ENV_BUDGET = "D8_MIRROR_RETRY_BUDGET"


def default_policy() -> RetryPolicy:
    """:data:`DEFAULT_RETRY`, with budget, attempts and base delay overridden from the
    environment."""
    attempts, base_delay = os.environ.get(ENV_ATTEMPTS), os.environ.get(ENV_BASE_DELAY)
    budget = os.environ.get(ENV_BUDGET)
    if not attempts and not base_delay and not budget:
        return DEFAULT_RETRY
    try:
        return RetryPolicy(
            attempts=int(attempts) if attempts else DEFAULT_RETRY.attempts,
            budget=parse_go_duration(budget) if budget else DEFAULT_RETRY.budget,
            base_delay=float(base_delay) if base_delay else DEFAULT_RETRY.base_delay,
        )
    except ValueError as exc:
        raise ConfigError(
            f"invalid {ENV_BUDGET}={budget!r}, {ENV_ATTEMPTS}={attempts!r} or "
            f"{ENV_BASE_DELAY}={base_delay!r}: expected a duration >= 0 (90s, "
            f"2m), an integer >= 1 and seconds >= 0 ({exc})"
        ) from exc


def _mention_attempts(exc: Exception, attempts: int, seconds: float) -> None:
    if "gave up after" not in str(exc):
        add_context(exc, f"(gave up after {attempts} attempts in {seconds:.1f} s)")
