"""How long a registry request may take: the per-request deadline and the transfer-rate floor.

A response body is watched as it streams: a request older than ``request_timeout`` (d8's
``D8_MIRROR_TIMEOUT``) is aborted, and so is one that delivers fewer than ``stall_bytes`` bytes
in ``stall_seconds`` (a registry that sends headers and then nothing, or drips a byte now and
then). Silence itself is cut by the socket timeouts, which never exceed ``stall_seconds``.
Both aborts raise :class:`~d8mirror.errors.RegistryNetworkError`, so the retry budget applies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from d8mirror.durations import env_duration
from d8mirror.errors import ConfigError, RegistryNetworkError
from d8mirror.registry._errors import redact_url
from d8mirror.retry import note_progress

ENV_TIMEOUT = "D8_MIRROR_TIMEOUT"
ENV_STALL_SECONDS = "D8_MIRROR_STALL_TIMEOUT"
ENV_STALL_BYTES = "D8_MIRROR_STALL_BYTES"
ENV_IMAGE_TIMEOUT = "D8_MIRROR_IMAGE_TIMEOUT"
#: httpx request extension: an absolute deadline (``clock`` time) of the operation the request
#: is part of, e.g. pulling one image.
DEADLINE_EXTENSION = "d8mirror.deadline"


@dataclass(frozen=True)
class TransferLimits:
    """Deadlines of one registry request (see the module docstring)."""

    request_timeout: float | None = None  #: whole request, body included; None = no limit
    stall_seconds: float = 60.0  #: window of the rate floor, and the socket timeout
    stall_bytes: int = 1024  #: fewer bytes than this in one window aborts
    image_timeout: float | None = 4 * 3600.0  #: pulling one image, every retry included
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stall_seconds <= 0 or self.stall_bytes < 0:
            raise ConfigError("the stall window must be positive and its byte floor >= 0")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError("a request timeout must be positive (or None for no limit)")
        if self.image_timeout is not None and self.image_timeout <= 0:
            raise ConfigError("an image timeout must be positive (or None for no limit)")

    @property
    def socket_timeout(self) -> float:
        """Connect/read/write timeout: the stall window, shorter if the request deadline is."""
        if self.request_timeout is None:
            return self.stall_seconds
        return min(self.stall_seconds, self.request_timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TransferLimits:
        """``D8_MIRROR_TIMEOUT`` (Go duration; negative, zero or unset = no deadline, as in
        d8), ``D8_MIRROR_STALL_TIMEOUT`` (Go duration), ``D8_MIRROR_STALL_BYTES`` and
        ``D8_MIRROR_IMAGE_TIMEOUT`` (Go duration; negative or zero = none)."""
        source = env if env is not None else os.environ
        timeout = env_duration(ENV_TIMEOUT, source)
        image = env_duration(ENV_IMAGE_TIMEOUT, source)
        stall = env_duration(ENV_STALL_SECONDS, source)
        floor_text = source.get(ENV_STALL_BYTES, "").strip()
        if stall is not None and stall <= 0:
            raise ConfigError(f"{ENV_STALL_SECONDS} must be a positive duration, got {stall}")
        if floor_text and not floor_text.isdigit():
            raise ConfigError(f"{ENV_STALL_BYTES}={floor_text!r} is not a byte count")
        return cls(
            request_timeout=timeout if timeout is not None and timeout > 0 else None,
            stall_seconds=stall if stall is not None else cls.stall_seconds,
            stall_bytes=int(floor_text) if floor_text else cls.stall_bytes,
            image_timeout=cls.image_timeout if image is None else image if image > 0 else None,
        )

    def image_deadline(self) -> float | None:
        """The ``clock`` time by which an image pulled from now on must be done."""
        return None if self.image_timeout is None else self.clock() + self.image_timeout

    def watch(
        self, pieces: Iterator[bytes], *, started: float, what: str, deadline: float | None = None
    ) -> Iterator[bytes]:
        """``pieces`` as they come, aborted past the deadlines or under the rate floor."""
        window_start, window_bytes = self.clock(), 0
        for piece in pieces:
            now = self.clock()
            if deadline is not None and now > deadline:
                raise self.past_image_deadline(what)
            if self.request_timeout is not None and now - started > self.request_timeout:
                raise RegistryNetworkError(
                    f"{what} took longer than {self.request_timeout:g} s ({ENV_TIMEOUT}): "
                    f"aborted; raise {ENV_TIMEOUT} for a slow link, or re-run (downloads "
                    "resume)"
                )
            window_bytes += len(piece)
            if now - window_start >= self.stall_seconds:
                if window_bytes < self.stall_bytes:
                    raise self.stalled(what)
                window_start, window_bytes = now, 0
            yield piece

    def past_image_deadline(self, what: str) -> RegistryNetworkError:
        return RegistryNetworkError(
            f"{what}: the image is not done after {self.image_timeout:g} s "
            f"({ENV_IMAGE_TIMEOUT}): aborted; raise {ENV_IMAGE_TIMEOUT} for a slow link"
        )

    def stalled(self, what: str) -> RegistryNetworkError:
        return RegistryNetworkError(
            f"{what} stalled: fewer than {self.stall_bytes} bytes in {self.stall_seconds:g} s "
            f"(the transfer-rate floor, {ENV_STALL_BYTES} per {ENV_STALL_SECONDS}): aborted; "
            "check the registry's health, or lower the floor for a very slow link"
        )


class WatchedTransport(httpx.BaseTransport):
    """An httpx transport whose bodies, both ways, run under :meth:`TransferLimits.watch`.
    The body of a successful (2xx) answer counts as retry progress
    (:func:`d8mirror.retry.note_progress`); an error body, or an upload the registry may
    still refuse, does not (a registry answering 503 with a body would never be given up)."""

    def __init__(self, inner: httpx.BaseTransport, limits: TransferLimits) -> None:
        self._inner = inner
        self._limits = limits

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = self._limits.clock()
        what = f"{request.method} {redact_url(request.url)}"
        deadline = request.extensions.get(DEADLINE_EXTENSION)
        if deadline is not None and started > deadline:
            raise self._limits.past_image_deadline(what)
        body = request.stream
        if isinstance(body, httpx.SyncByteStream) and not isinstance(body, httpx.ByteStream):
            request.stream = _Watched(
                body, self._limits, started, f"upload {what}", deadline, progress=False
            )
        response = self._inner.handle_request(request)
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _Watched(
                response.stream,
                self._limits,
                started,
                what,
                deadline,
                progress=200 <= response.status_code < 300,
            )
        return response

    def close(self) -> None:
        self._inner.close()


class _Watched(httpx.SyncByteStream):
    def __init__(
        self,
        stream: httpx.SyncByteStream,
        limits: TransferLimits,
        started: float,
        what: str,
        deadline: float | None,
        *,
        progress: bool,
    ) -> None:
        self._stream = stream
        self._deadline = deadline
        self._progress = progress
        self._limits = limits
        self._started = started
        self._what = what

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._limits.watch(
            iter(self._stream), started=self._started, what=self._what, deadline=self._deadline
        ):
            if self._progress:
                note_progress(len(piece))
            yield piece

    def close(self) -> None:
        self._stream.close()


def check_transfer_environment(env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` now for a bad ``D8_MIRROR_TIMEOUT``, stall, image timeout or
    retry variable, before a run starts (the CLI calls this first)."""
    from d8mirror.retry import default_policy

    TransferLimits.from_env(env)
    if env is None:
        default_policy()
