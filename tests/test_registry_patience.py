"""Retry patience at least d8's (issue 12.8, 12.9): a time budget, proven with an injected clock,
reset by flowing bytes, never spent on 401/403/404 or on local content that contradicts its
descriptor; a real registry outage of a few seconds survived; D8_MIRROR_TIMEOUT as a Go
duration."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from d8mirror.durations import parse_go_duration
from d8mirror.errors import (
    ConfigError,
    DeniedError,
    DigestMismatchError,
    LocalContentError,
    ManifestNotFoundError,
    RegistryNetworkError,
    ServerError,
    UnauthorizedError,
    is_retryable,
)
from d8mirror.push.access import check_timeout
from d8mirror.registry import RegistryClient, TLSOptions
from d8mirror.registry._limits import TransferLimits
from d8mirror.retry import RetryPolicy, default_policy, note_progress
from testbed.registry_server import RegistryServer, free_port


class FakeClock:
    """Time that only moves when the policy sleeps (or the operation says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _policy(clock: FakeClock, **options: Any) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, random=lambda: 0.0, **options)


def _down_until(
    clock: FakeClock,
    until: float,
    error: Callable[[], Exception] = lambda: RegistryNetworkError("refused"),
) -> tuple[list[float], Callable[[], str]]:
    calls: list[float] = []

    def operation() -> str:
        calls.append(clock.now)
        clock.now += 0.05  # a refused connection costs a little
        if clock.now < until:
            raise error()
        return "ok"

    return calls, operation


def test_the_default_budget_survives_a_60_second_blip_like_d8() -> None:
    clock = FakeClock()
    calls, operation = _down_until(clock, 60.0)
    assert _policy(clock).call(operation) == "ok"
    assert calls[-1] >= 60.0 - 0.05 and len(calls) < 20  # backoff, not a busy loop
    assert max(clock.slept) <= 10.0 + 1e-9  # the delay is capped


def test_the_budget_ends_a_longer_outage_and_the_error_says_how_long() -> None:
    clock = FakeClock()
    calls, operation = _down_until(clock, 10_000.0)
    with pytest.raises(RegistryNetworkError) as caught:
        _policy(clock, budget=90.0).call(operation)
    assert 90.0 <= clock.now <= 92.0  # the last try lands at the end of the budget
    assert f"gave up after {len(calls)} attempts in" in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        UnauthorizedError("401"),
        DeniedError("403"),
        ManifestNotFoundError("404"),
        LocalContentError("archive holds 10 bytes, not 20"),
    ],
)
def test_401_403_404_and_local_content_errors_are_never_retried(error: Exception) -> None:
    clock = FakeClock()
    calls, operation = _down_until(clock, 60.0, lambda: error)
    with pytest.raises(type(error)):
        _policy(clock).call(operation)
    assert len(calls) == 1 and clock.slept == []
    assert not is_retryable(error)


def test_bytes_flowing_restart_the_budget() -> None:
    """A transfer that keeps breaking after some progress is not given up after 90 s."""
    clock = FakeClock()
    calls: list[float] = []

    def operation() -> str:
        calls.append(clock.now)
        if len(calls) < 12:
            clock.now += 20.0  # 20 s of transfer, then the connection breaks
            note_progress(1 << 20)
            raise RegistryNetworkError("reset mid-body")
        return "done"

    assert _policy(clock, budget=30.0).call(operation) == "done"
    assert clock.now > 200.0 and len(calls) == 12


def test_a_blob_corrupted_every_time_is_not_retried_for_ever() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def operation() -> str:
        calls.append(clock.now)
        note_progress(100)  # the bytes flowed, they were just wrong
        raise DigestMismatchError("flipped")

    with pytest.raises(DigestMismatchError, match="gave up after 5 attempts"):
        _policy(clock).call(operation)
    assert len(calls) == 5


def test_an_injected_sleep_alone_still_ends_the_budget() -> None:
    slept: list[float] = []
    policy = RetryPolicy(budget=5.0, sleep=slept.append, random=lambda: 0.0)

    def operation() -> str:
        raise ServerError("503")

    with pytest.raises(ServerError):
        policy.call(operation)
    assert sum(slept) == pytest.approx(5.0)


def test_the_budget_is_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("D8_MIRROR_RETRY_ATTEMPTS", raising=False)
    monkeypatch.setenv("D8_MIRROR_RETRY_BUDGET", "2m30s")
    assert default_policy().budget == 150.0 and default_policy().attempts is None
    monkeypatch.setenv("D8_MIRROR_RETRY_BUDGET", "3")
    assert default_policy().budget == 3.0
    monkeypatch.setenv("D8_MIRROR_RETRY_BUDGET", "soon")
    with pytest.raises(ConfigError, match="D8_MIRROR_RETRY_BUDGET"):
        default_policy()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("-1s", -1.0),
        ("0", 0.0),
        ("30", 30.0),
        ("1h2m3s4ms", 3723.004),
        ("300us", 0.0003),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "m", "1m30", "--1s"])
def test_not_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_d8_mirror_timeout_takes_go_durations_for_pull_and_push() -> None:
    """``1m30s`` used to stop push before it started (the write check's own parser)."""
    assert check_timeout({"D8_MIRROR_TIMEOUT": "1m30s"}) == 90.0
    assert check_timeout({"D8_MIRROR_TIMEOUT": "-1s"}) == 15.0  # negative: the default
    assert TransferLimits.from_env({"D8_MIRROR_TIMEOUT": "1m30s"}).request_timeout == 90.0
    assert TransferLimits.from_env({"D8_MIRROR_TIMEOUT": "-5m"}).request_timeout is None
    assert TransferLimits.from_env({}).request_timeout is None
    with pytest.raises(ConfigError, match="D8_MIRROR_TIMEOUT"):
        TransferLimits.from_env({"D8_MIRROR_TIMEOUT": "soon"})


def test_a_blob_shorter_than_its_descriptor_fails_at_once(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Deterministic local error: one try, not five, against a real registry."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 100)
    digest = "sha256:" + hashlib.sha256(b"x" * 200).hexdigest()
    tries: list[int] = []
    policy = RetryPolicy(budget=30.0, sleep=lambda _s: None)
    with registry.client() as client:

        def upload() -> None:
            tries.append(1)
            client.upload_blob("patience/short", digest, blob, size=200)

        with pytest.raises(LocalContentError, match="100 bytes, not the 200"):
            policy.call(upload)
        with pytest.raises(LocalContentError, match="too few"):
            client.upload_blob("patience/short", digest, blob, offset=50, size=200)
    assert tries == [1]


# -- a real outage ----------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path) -> Any:
    server = RegistryServer(tmp_path / "restartable", port=free_port()).start()
    try:
        with server.client() as client:
            data = (
                b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
                b'"manifests":[]}'
            )
            client.put_manifest(
                "patience/outage", "v1", data, "application/vnd.oci.image.index.v1+json"
            )
        yield server
    finally:
        server.stop()


def _outage(server: RegistryServer, seconds: float) -> threading.Thread:
    server.stop()

    def come_back() -> None:
        time.sleep(seconds)
        server.start()

    thread = threading.Thread(target=come_back, daemon=True)
    thread.start()
    return thread


def test_a_registry_down_for_a_few_seconds_is_survived_with_the_default_patience(
    restartable: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry process is stopped and started again 4 s later: the old policy (5 tries,
    ~3 s) gave up; the default budget rides it out."""
    for name in (
        "D8_MIRROR_RETRY_BUDGET",
        "D8_MIRROR_RETRY_ATTEMPTS",
        "D8_MIRROR_RETRY_BASE_DELAY",
    ):
        monkeypatch.delenv(name, raising=False)
    policy = default_policy()
    with RegistryClient(restartable.host, tls=TLSOptions(insecure=True)) as client:
        assert client.list_tags("patience/outage") == ["v1"]  # scheme settled, pool warm
        started = time.monotonic()
        thread = _outage(restartable, 4.0)
        tags = policy.call(lambda: client.list_tags("patience/outage"), what="list tags")
        elapsed = time.monotonic() - started
        thread.join(30)
    assert tags == ["v1"] and elapsed >= 4.0


def test_a_small_budget_gives_up_on_the_same_outage(restartable: RegistryServer) -> None:
    policy = RetryPolicy(budget=1.0)
    with RegistryClient(restartable.host, tls=TLSOptions(insecure=True)) as client:
        assert client.list_tags("patience/outage") == ["v1"]
        thread = _outage(restartable, 4.0)
        started = time.monotonic()
        with pytest.raises(RegistryNetworkError, match="gave up after"):
            policy.call(lambda: client.list_tags("patience/outage"))
        assert time.monotonic() - started < 4.0
        thread.join(30)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("D8_MIRROR_TIMEOUT", "soon"),
        ("D8_MIRROR_RETRY_BUDGET", "a while"),
        ("D8_MIRROR_STALL_TIMEOUT", "0s"),
    ],
)
def test_a_bad_timing_variable_fails_before_anything_starts(
    name: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.main import main

    monkeypatch.setenv(name, value)
    assert main(["push", str(tmp_path), "127.0.0.1:9/target"]) == 1  # every error exits 1, as d8
    assert name in capsys.readouterr().err
