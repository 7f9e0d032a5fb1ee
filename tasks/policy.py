"""Retry and caching policy shared by every d8mirror task.

Retries happen only on transient failures (429, 5xx, network, digest mismatch), never on
401/403/404 or bad input: ``d8mirror.errors.is_retryable`` decides. Cache keys are built from
content (digests, paths, a cache version), never from task source.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from d8mirror.errors import is_retryable
from d8mirror.hashing import sha256_bytes_hex

#: Bump when the meaning of a cached result changes; old records then stop matching.
CACHE_VERSION = "d8mirror-cache-v1"


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors that may go away by themselves."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return is_retryable(exc)
    return False


#: Keyword arguments for ``@task`` that talk to a registry or S3.
#: The core already retries every request and blob for a time budget (``d8mirror.retry``,
#: 90 s after a failure, ``D8_MIRROR_RETRY_BUDGET``), so a registry blip d8 survives is
#: survived there; one task-level retry is a last resort. Errors that cannot go away by
#: themselves (401/403/404, bad input, local content contradicting its descriptor) are never
#: retried, here or in the core.
TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 1,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}


def content_key(*parts: Any) -> str:
    """A stable cache key from JSON-able parts, prefixed with :data:`CACHE_VERSION`."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return sha256_bytes_hex(blob.encode())
