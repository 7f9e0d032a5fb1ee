"""Write check before a push (R-8.6, Q18).

Proves push permission on ``<registry>`` every time, and leaves nothing behind: a blob upload
session is opened (``POST …/blobs/uploads/`` needs the push scope) and cancelled at once. The
reference pushes a random image to ``<registry>:d8WriteCheck`` instead; a deterministic image
that is already there would prove nothing (a read-only user could "pass" by reading it). The
probe goes through the same retry policy as every other request (429, 5xx and resets are
retried), within a deadline (15 s, or ``D8_MIRROR_TIMEOUT``); ``MIRROR_BYPASS_ACCESS_CHECKS=1``
skips the check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

from d8mirror.durations import env_duration
from d8mirror.errors import MirrorError
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

WRITE_CHECK_TAG = "d8WriteCheck"  # the reference's tag; d8mirror never writes it
DEFAULT_TIMEOUT = 15.0
BYPASS_ENV = "MIRROR_BYPASS_ACCESS_CHECKS"
TIMEOUT_ENV = "D8_MIRROR_TIMEOUT"


class WriteCheckError(MirrorError):
    """The target registry refused (or did not answer) the write check."""


def bypassed(env: Mapping[str, str] | None = None) -> bool:
    return (env if env is not None else os.environ).get(BYPASS_ENV, "") == "1"


def check_timeout(env: Mapping[str, str] | None = None) -> float:
    """``D8_MIRROR_TIMEOUT`` as seconds (a Go duration: ``30s``, ``1m30s``, ``500ms``; a bare
    number is seconds), else 15; a negative or zero value leaves the 15 s in place, as in d8."""
    seconds = env_duration(TIMEOUT_ENV, env)
    return seconds if seconds is not None and seconds > 0 else DEFAULT_TIMEOUT


def check_write_access(
    client: RegistryClient,
    target: Repository,
    *,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """Prove push permission on ``target`` or raise :class:`WriteCheckError` (cause chained)."""
    deadline = check_timeout() if timeout is None else timeout
    policy = retry or default_policy()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-check")
    future = pool.submit(
        policy.call, partial(client.probe_push, target.path), what=f"write check of {target}"
    )
    try:
        future.result(timeout=deadline)
    except FutureTimeout as exc:
        raise WriteCheckError(
            f"registry credentials validation failure: no answer from "
            f"{target} within {deadline:g}s (raise {TIMEOUT_ENV}, or set "
            f"{BYPASS_ENV}=1 to skip the check)"
        ) from exc
    except MirrorError as exc:
        raise WriteCheckError(
            f"registry credentials validation failure: cannot push to "
            f"{target} (these credentials need push permission there): "
            f"{exc}"
        ) from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
