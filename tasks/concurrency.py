"""Per-registry connection limits shared by every run, on every machine: Prefect global
concurrency limits (GCL) named ``d8mirror-registry-<host>``.

``d8mirror setup --registry HOST --limit N`` creates them. Tasks that talk to a registry hold
slots while they do (``registry_slots``): a package fetch occupies ``blob_workers`` slots (its
connections), metadata tasks one. Strictness follows the ``concurrency_limits`` parameter: off
means no server round trip at all (the CLI's one-shot runs); on means a missing limit is an
error, never a silent "no throttle" (Prefect's non-strict default only logs a warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from d8mirror.errors import ConfigError

LIMIT_PREFIX = "d8mirror-registry-"


class ConcurrencyLimitMissing(ConfigError):
    """``concurrency_limits`` is on but the registry's limit was never created."""


def limit_name(registry: str) -> str:
    """``d8mirror-registry-<host>`` with every character outside [a-z0-9.-] made a dash
    (``127.0.0.1:5000`` -> ``d8mirror-registry-127.0.0.1-5000``)."""
    host = registry.split("/", 1)[0].lower()
    return LIMIT_PREFIX + re.sub(r"[^a-z0-9.-]+", "-", host).strip("-")


def ensure_limit(registry: str, limit: int) -> tuple[str, bool]:
    """Create or update the registry's limit; returns (name, created)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    name = limit_name(registry)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
            )
            return name, True
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active=True)
        )
        return name, False


def _server_limit(name: str) -> int | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    return found.limit if found.active else -1


@contextmanager
def registry_slots(registry: str, occupy: int, *, enabled: bool) -> Iterator[None]:
    """Hold ``occupy`` slots (at most the limit itself) of the registry's limit, if enabled."""
    if not enabled:
        yield
        return
    from prefect.concurrency.sync import concurrency

    name = limit_name(registry)
    limit = _server_limit(name)
    if limit is None:
        raise ConcurrencyLimitMissing(
            f"concurrency limit {name!r} does not exist: run `d8mirror setup --registry "
            f"{registry} --limit N` or turn concurrency_limits off"
        )
    if limit < 0:  # inactive: Prefect does not throttle, neither do we
        yield
        return
    with concurrency(name, occupy=max(1, min(occupy, limit)), strict=True):
        yield
