"""Per-request retries of transient failures: bounded attempts, exponential backoff with jitter.

    policy = RetryPolicy(attempts=5, base_delay=0.2)
    digest = policy.call(lambda: client.head_manifest(repo, tag).digest,
                         what=f"resolve {repo}:{tag}")

Only errors for which :func:`d8mirror.errors.is_retryable` is true are retried (429, 5xx,
network faults, digest mismatches); everything else propagates at once. A 429's
``Retry-After`` is honoured, capped at ``max_retry_after``. When the attempts run out the last
error propagates unchanged in type, its message saying how many attempts were made.

Configuration: :func:`default_policy` reads ``D8_MIRROR_RETRY_ATTEMPTS`` and
``D8_MIRROR_RETRY_BASE_DELAY`` (seconds) from the environment; every core entry point also takes
an explicit ``retry=`` policy.

The retry unit is one request (or one whole blob transfer, which itself resumes a cut body
once), so a fault costs one request, not a whole package. The clock is injected (``sleep``,
``random``) so tests need not wait.
"""

from __future__ import annotations

import logging
import os
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from d8mirror.errors import ConfigError, RateLimitedError, add_context, is_retryable

log = logging.getLogger("d8mirror.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 5                 #: total tries, the first one included (1 = no retry)
    base_delay: float = 0.2           #: seconds before the 2nd try; doubles per try
    max_delay: float = 10.0           #: cap of the exponential delay
    jitter: float = 0.5               #: up to this fraction of the delay is added at random
    max_retry_after: float = 30.0     #: cap of a server's Retry-After
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0 \
                or self.max_retry_after < 0:
            raise ValueError("retry delays and jitter must not be negative")

    def delay(self, failed_attempt: int, exc: BaseException) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (failed_attempt - 1))
        backoff += backoff * self.jitter * self.random()
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            backoff = max(backoff, min(exc.retry_after, self.max_retry_after))
        return backoff

    def call(self, operation: Callable[[], T], *, what: str = "") -> T:
        """``operation()``, retried on transient errors; see the module docstring."""
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if attempt >= self.attempts:
                    if self.attempts > 1:
                        _mention_attempts(exc, self.attempts)
                    raise
                wait = self.delay(attempt, exc)
                log.info("%s failed (attempt %d of %d), retrying in %.2f s: %s",
                         what or "request", attempt, self.attempts, wait, exc)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


#: The default of the core: 5 tries, 0.2 s, 0.4 s, 0.8 s, 1.6 s apart (plus jitter).
DEFAULT_RETRY = RetryPolicy()
#: A single try (for callers that retry at a higher level).
NO_RETRY = RetryPolicy(attempts=1)

ENV_ATTEMPTS = "D8_MIRROR_RETRY_ATTEMPTS"
ENV_BASE_DELAY = "D8_MIRROR_RETRY_BASE_DELAY"


def default_policy() -> RetryPolicy:
    """:data:`DEFAULT_RETRY`, with attempts and base delay overridden from the environment."""
    attempts, base_delay = os.environ.get(ENV_ATTEMPTS), os.environ.get(ENV_BASE_DELAY)
    if not attempts and not base_delay:
        return DEFAULT_RETRY
    try:
        return RetryPolicy(attempts=int(attempts) if attempts else DEFAULT_RETRY.attempts,
                           base_delay=float(base_delay) if base_delay
                           else DEFAULT_RETRY.base_delay)
    except ValueError as exc:
        raise ConfigError(f"invalid {ENV_ATTEMPTS}={attempts!r} or {ENV_BASE_DELAY}="
                          f"{base_delay!r}: expected an integer >= 1 and seconds >= 0 "
                          f"({exc})") from exc


def _mention_attempts(exc: Exception, attempts: int) -> None:
    if "gave up after" not in str(exc):
        add_context(exc, f"(gave up after {attempts} attempts)")
