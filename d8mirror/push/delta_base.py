"""Before a delta bundle is pushed: does the target hold every blob the delta omits?

A delta bundle (:mod:`d8mirror.delta`) carries every manifest but no blob its base receipt
lists. The push must not start unless the target is at (or beyond) that receipt, so before any
write (the write check, the unpack, any upload) every omitted blob is HEAD-checked in the target:
first in the repository ``delta.json`` names (a layout path such as ``packages/console``, routed
into the target like a layout), then in every repository of the bundle whose layouts need it.
The first repository that holds it is where the push mounts it from
(:class:`~d8mirror.push.blobs.BlobLocations`). HEADs run on a bounded pool, each retried by
the retry policy (401/403/404 are not retried).

One blob missing refuses the whole push (:class:`~d8mirror.errors.DeltaBaseMissingError`,
naming how many, the first few, the delta and its base receipt, and what to do); nothing is
written. Applying a delta twice finds everything present: a warm re-push.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.delta import Delta, OmittedBlob, read_delta
from d8mirror.errors import DeltaBaseMissingError
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

from .routing import Router

#: HEAD requests of the pre-check at once.
BASE_CHECK_WORKERS = 8
#: Missing blobs named in the refusal (all are counted).
SHOWN_MISSING = 5


class NeededBlob(BaseModel):
    """One omitted blob: where the delta says the target holds it, and which layouts need it."""

    model_config = ConfigDict(frozen=True)

    digest: str
    size: int
    repository: str = Field(description="The delta's repository (a layout path, e.g. packages/x).")
    layouts: tuple[str, ...] = Field((), description="Layout paths of the bundle that need it.")


class DeltaNeeds(BaseModel):
    """A delta bundle's omitted blobs, as the bundle check found them used."""

    model_config = ConfigDict(frozen=True)

    delta_id: str
    base_receipt_sha256: str
    blobs: tuple[NeededBlob, ...] = ()

    @classmethod
    def of(cls, delta: Delta, used: Mapping[str, Iterable[str]]) -> DeltaNeeds:
        """``used``: digest → the layout paths that need it (the bundle check's)."""
        return cls(
            delta_id=delta.id,
            base_receipt_sha256=delta.base_receipt_sha256,
            blobs=tuple(_needed(blob, used.get(blob.digest, ())) for blob in delta.omitted),
        )


def _needed(blob: OmittedBlob, layouts: Iterable[str]) -> NeededBlob:
    return NeededBlob(
        digest=blob.digest,
        size=blob.size,
        repository=blob.repository,
        layouts=tuple(sorted(set(layouts))),
    )


class MissingBlob(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: str
    repository: str = Field(description="The target repository the delta names for it.")


class DeltaBase(BaseModel):
    """What the pre-check found: where each omitted blob is, and which are missing."""

    delta_id: str
    base_receipt_sha256: str
    omitted: int = 0
    bytes_omitted: int = 0
    found: dict[str, str] = Field(
        default_factory=dict, description="digest → a target repository path that holds it."
    )
    missing: list[MissingBlob] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        """One line: how many omitted blobs the target holds."""
        return (
            f"delta {self.delta_id}: the target holds {len(self.found)} of the "
            f"{self.omitted} blobs the bundle omits"
            + (f" ({len(self.missing)} missing)" if self.missing else "")
        )


def bundle_delta(bundle_dir: str | Path | None) -> Delta | None:
    """The delta description of a bundle directory (sidecar checked: a tampered ``delta.json``
    is refused with SealedFileError), None for a full bundle or a single archive."""
    if bundle_dir is None or not Path(bundle_dir).is_dir():
        return None
    return read_delta(Path(bundle_dir))


def candidate_repositories(blob: NeededBlob, target: Repository, router: Router) -> list[str]:
    """Target repository paths to look for ``blob`` in: the delta's first, then those of the
    layouts that need it (each once)."""
    out: list[str] = []
    for layout in (blob.repository, *blob.layouts):
        path = router.repository(target, layout).path
        if path not in out:
            out.append(path)
    return out


def check_delta_base(
    client: RegistryClient,
    needs: DeltaNeeds,
    target: Repository,
    router: Router,
    *,
    workers: int = BASE_CHECK_WORKERS,
    retry: RetryPolicy | None = None,
) -> DeltaBase:
    """HEAD every omitted blob in its candidate repositories (bounded, retried): where each
    one is, and those that are nowhere. Reads only; raises the registry's typed errors."""
    policy = retry or default_policy()

    def locate(blob: NeededBlob) -> str | None:
        for repository in candidate_repositories(blob, target, router):
            if _holds(client, policy, repository, blob.digest):
                return repository
        return None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="delta-base") as pool:
        where = list(pool.map(locate, needs.blobs))
    base = DeltaBase(
        delta_id=needs.delta_id,
        base_receipt_sha256=needs.base_receipt_sha256,
        omitted=len(needs.blobs),
        bytes_omitted=sum(b.size for b in needs.blobs),
    )
    for blob, repository in zip(needs.blobs, where, strict=True):
        if repository is None:
            named = router.repository(target, blob.repository).path
            base.missing.append(MissingBlob(digest=blob.digest, repository=named))
        else:
            base.found[blob.digest] = repository
    return base


def _holds(client: RegistryClient, policy: RetryPolicy, repository: str, digest: str) -> bool:
    return bool(
        policy.call(
            lambda: client.blob_exists(repository, digest), what=f"check {repository}@{digest}"
        )
    )


def refuse_missing_base(base: DeltaBase, target: Repository) -> None:
    """DeltaBaseMissingError when the target lacks an omitted blob: how many, the first few,
    the delta and its base receipt, and what to do."""
    if base.complete:
        return
    shown = ", ".join(f"{m.digest} ({m.repository})" for m in base.missing[:SHOWN_MISSING])
    more = len(base.missing) - SHOWN_MISSING
    raise DeltaBaseMissingError(
        f"delta bundle {base.delta_id} cannot be applied to {target}: "
        f"{len(base.missing)} of the {base.omitted} blobs it omits are not in the target "
        f"registry: {shown}{f', … and {more} more' if more > 0 else ''}. The delta was built "
        f"against receipt sha256:{base.base_receipt_sha256}, and the target is not at that "
        "receipt. Nothing was pushed. Push the earlier delta bundles (or the full bundle) "
        "into this registry first, or pull a new delta against the site's current receipt "
        "(`d8mirror receipt REGISTRY -o receipt.json`, then `pull --delta-from receipt.json`)."
    )
