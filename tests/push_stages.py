"""The push's stages as mirror-push runs them (check-bundle, unpack-bundle, push-layout per job,
finish-push; :mod:`d8mirror.push.stages`), called in-process with a given client, for tests of
the core against a real registry. Flow-level behaviour (retries, artifacts, the stop request,
credentials) is tested through ``flows.push.run_push``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from d8mirror.errors import MirrorError
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.pusher import LayoutPushResult
from d8mirror.push.routing import Router
from d8mirror.push.stages import (
    LayoutJob,
    PreparedTree,
    PushedLayouts,
    check_bundle,
    finish_push,
    heaviest_first,
    prepare_push_tree,
    push_layout,
    push_result,
)
from d8mirror.push.summary import PushResult
from d8mirror.push.unified import WorkDir
from d8mirror.reference import Repository
from d8mirror.registry import Credentials, RegistryClient


def prepare(
    archives: Sequence[Path], tmp_dir: Path, target: Repository, router: Router
) -> PreparedTree:
    """check-bundle, then unpack-bundle."""
    check_bundle(archives, target, router)
    return prepare_push_tree(archives, WorkDir(tmp_dir), target, router)


def push_prepared(
    client: RegistryClient,
    tree: PreparedTree,
    target: Repository,
    router: Router,
    *,
    concurrency: int = 4,
    blob_workers: int = 4,
) -> PushResult:
    """push-layout for every job (heaviest first, ``concurrency`` at once), then finish-push."""
    started = time.monotonic()
    locations = BlobLocations()

    def one(job: LayoutJob) -> LayoutPushResult | MirrorError | OSError:
        try:
            return push_layout(client, job, locations=locations, blob_workers=blob_workers)
        except (MirrorError, OSError) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {job.layout: pool.submit(one, job) for job in heaviest_first(tree.jobs)}
        layouts = PushedLayouts()
        for job in tree.jobs:
            layouts.record(job, futures[job.layout].result())
    finish = finish_push(client, tree.unified, target, router, layouts)
    return push_result(target, tree, layouts, finish, elapsed_seconds=time.monotonic() - started)


def push_bundle(
    client: RegistryClient,
    archives: Sequence[Path],
    tmp_dir: Path,
    target: Repository,
    router: Router,
    *,
    concurrency: int = 4,
    blob_workers: int = 4,
) -> PushResult:
    """The whole push of ``archives`` (sorted); the working dir is removed at the end."""
    tree = prepare(archives, tmp_dir, target, router)
    try:
        return push_prepared(
            client, tree, target, router, concurrency=concurrency, blob_workers=blob_workers
        )
    finally:
        tree.workdir().cleanup()


@contextmanager
def given_credentials(registry: str, credentials: Credentials | None) -> Iterator[None]:
    """Credentials given explicitly (as the CLI's session gives them) while the block runs."""
    from tasks import runtime

    runtime.give_credentials(registry, credentials)
    try:
        yield
    finally:
        runtime.give_credentials(registry, None)
