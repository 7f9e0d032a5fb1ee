"""After a push: every pushed (repository, tag) resolves in the target to the bundle's digest."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.errors import NotFoundError
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy


@dataclass(frozen=True, order=True)
class Expected:
    repository: str
    tag: str
    digest: str


class Mismatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    repository: str
    tag: str
    expected: str
    actual: str | None = Field(description="The digest found; None: the tag is missing.")

    def describe(self, registry: str) -> str:
        where = f"{registry}/{self.repository}:{self.tag}"
        if self.actual is None:
            return f"{where} is missing (expected {self.expected})"
        return f"{where} is {self.actual}, expected {self.expected}"


def verify_pushed(
    client: RegistryClient,
    expected: Iterable[Expected],
    *,
    workers: int = 4,
    retry: RetryPolicy | None = None,
) -> list[Mismatch]:
    """HEAD every tag; the mismatches (missing or other digest), sorted."""
    policy = retry or default_policy()
    items = sorted(set(expected))
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify") as pool:
        found = list(
            pool.map(
                lambda e: policy.call(
                    lambda: _resolve(client, e), what=f"verify {e.repository}:{e.tag}"
                ),
                items,
            )
        )
    return [
        Mismatch(repository=e.repository, tag=e.tag, expected=e.digest, actual=actual)
        for e, actual in zip(items, found, strict=True)
        if actual != e.digest
    ]


def _resolve(client: RegistryClient, item: Expected) -> str | None:
    try:
        return client.head_manifest(item.repository, item.tag).digest
    except NotFoundError:
        return None
