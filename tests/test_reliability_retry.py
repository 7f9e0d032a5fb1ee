"""The core retry helper (d8mirror.retry): only transient errors, exponential backoff with
jitter, Retry-After honoured and capped, a bounded number of attempts (no real sleeping)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from d8mirror.errors import (
    DeniedError,
    DigestMismatchError,
    ManifestNotFoundError,
    RateLimitedError,
    RegistryNetworkError,
    ServerError,
)
from d8mirror.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy


def _policy(**overrides: Any) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    options: dict[str, Any] = {"sleep": slept.append, "random": lambda: 0.0, **overrides}
    return RetryPolicy(**options), slept


def _flaky(errors: list[Exception], value: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return value

    return calls, operation


def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    policy, slept = _policy(attempts=5, base_delay=0.2)
    calls, operation = _flaky(
        [ServerError("503"), RegistryNetworkError("reset"), DigestMismatchError("flipped")]
    )
    assert policy.call(operation) == "ok"
    assert len(calls) == 4
    assert slept == pytest.approx([0.2, 0.4, 0.8])


def test_jitter_adds_at_most_its_fraction_and_the_delay_is_capped() -> None:
    policy, slept = _policy(
        attempts=8, base_delay=1.0, max_delay=3.0, jitter=0.5, random=lambda: 1.0
    )
    _calls, operation = _flaky([ServerError("x") for _ in range(7)])
    policy.call(operation)
    assert slept == pytest.approx([1.5, 3.0, 4.5, 4.5, 4.5, 4.5, 4.5])


def test_retry_after_is_honoured_and_capped() -> None:
    policy, slept = _policy(base_delay=0.1, max_retry_after=2.0)
    _calls, operation = _flaky(
        [
            RateLimitedError("429", retry_after=1.5),
            RateLimitedError("429", retry_after=600.0),
            RateLimitedError("429", retry_after=None),
        ]
    )
    assert policy.call(operation) == "ok"
    assert slept == pytest.approx([1.5, 2.0, 0.4])


@pytest.mark.parametrize(
    "error", [ManifestNotFoundError("404"), DeniedError("403"), ValueError("bad input")]
)
def test_permanent_errors_are_not_retried(error: Exception) -> None:
    policy, slept = _policy()
    calls, operation = _flaky([error])
    with pytest.raises(type(error)):
        policy.call(operation)
    assert len(calls) == 1 and slept == []


def test_attempts_are_bounded_and_the_last_error_says_so() -> None:
    policy, slept = _policy(attempts=3)
    calls, operation = _flaky(
        [DigestMismatchError(f"blob repo@sha256:{'a' * 64} corrupt") for _ in range(5)]
    )
    with pytest.raises(DigestMismatchError) as caught:
        policy.call(operation)
    assert len(calls) == 3 and len(slept) == 2
    assert "repo@sha256:" in str(caught.value)
    assert "gave up after 3 attempts" in str(caught.value)


def test_defaults_and_no_retry() -> None:
    assert (DEFAULT_RETRY.attempts, DEFAULT_RETRY.budget, DEFAULT_RETRY.base_delay) == (
        None,
        90.0,
        0.2,
    )
    calls, operation = _flaky([ServerError("x")])
    with pytest.raises(ServerError) as caught:
        NO_RETRY.call(operation)
    assert len(calls) == 1 and "gave up" not in str(caught.value)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
