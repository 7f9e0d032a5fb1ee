"""The CLI's warm-ups: work a command is about to do, started while its local Prefect API server
starts (~4 s in which the tool would otherwise wait): ``pull`` fetches the packages' main
images into its blob store (:mod:`d8mirror.pull.warmup`), ``push`` puts the bundle's blobs into
the target (:mod:`d8mirror.push.warmup`), both through the flows' own stage functions. The flow
that follows finds that work done (pull: blobs already in its store, reported as reused; push:
blobs already in the target, reported as present), and the warm-up says what it did on its own
line. ``D8MIRROR_WARM_UP=0`` turns them off. The session (:class:`app.session.Session`) starts
a warm-up, stops it when the flow takes over and finishes it when it closes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from d8mirror.errors import MirrorError

if TYPE_CHECKING:
    from d8mirror.pull.warmup import StoreWarmer
    from d8mirror.push.warmup import PushWarmer
    from tasks.models import PullParameters
    from tasks.push_models import PushParameters

    Warmer = StoreWarmer | PushWarmer

_OFF = ("0", "false", "no", "off")
#: Seconds a warm-up waits on a silent registry before it leaves the work to the command.
TIMEOUT = 15.0


def start_warm_up(start: Callable[[], Warmer | None]) -> Warmer | None:
    """The warm-up ``start`` begins; None when there is nothing to warm, it is turned off, or
    it cannot begin (the command itself reports why)."""
    if os.environ.get("D8MIRROR_WARM_UP", "1").strip().lower() in _OFF:
        return None
    try:
        return start()
    except (MirrorError, OSError, ValueError):
        return None


def finish_warm_up(warmer: Warmer) -> None:
    """Stop, wait for what is in flight, clean up; say what was done ahead."""
    warmer.stop()
    warmer.join()
    warmer.close()
    if (summary := warmer.summary()) is not None:
        print(summary, file=sys.stderr)


def warm_pull(params: PullParameters) -> Warmer | None:
    """Fetch the packages' main images into the pull's blob store (their manifests only
    when the pull checks disk space first)."""
    from d8mirror.pull.warmup import StoreWarmer, can_warm
    from d8mirror.registry import RegistryClient
    from tasks.credentials import source_credentials
    from tasks.runtime import blob_store

    options = params.options()
    if not can_warm(options) or params.credentials_block or params.concurrency_limits:
        return None
    if params.delta_from is not None:  # nothing is fetched before its receipt is verified
        return None
    registry = options.source.registry
    client = RegistryClient(
        registry, credentials=source_credentials(registry), tls=params.tls(), timeout=TIMEOUT
    )
    store = blob_store(params.store_root())  # the flow's own store object: one download each
    return StoreWarmer(
        client,
        store,
        options,
        concurrency=params.concurrency,
        blob_workers=params.blob_workers,
        manifests_only=not params.skip_space_check,  # no layer before the space check
    ).start()


def warm_push(params: PushParameters) -> Warmer | None:
    """Put the bundle's blobs into the push target, through the push's own stages (the flow's
    mount sources and checked archives: :mod:`tasks.runtime`)."""
    from d8mirror.delta import is_delta_bundle
    from d8mirror.push.warmup import PushWarmer
    from d8mirror.registry import RegistryClient
    from tasks import runtime
    from tasks.credentials import target_credentials

    if params.bundle_dir and is_delta_bundle(Path(params.bundle_dir)):
        return None  # nothing is written before the push checks the target holds its base
    target = params.target()
    archives = params.archives()
    registry = target.registry
    credentials = runtime.given_credentials(registry)
    if credentials is None and params.credentials_block:
        return None  # a Secret block is read through the API the warm-up does not wait for
    credentials = credentials or target_credentials(registry)
    client = RegistryClient(registry, tls=params.tls(), timeout=TIMEOUT, credentials=credentials)
    return PushWarmer(
        client,
        archives,
        target,
        params.router(),
        params.tmp_path(archives) / "warmup",
        locations=runtime.blob_locations(registry),
        checked=runtime.checked_files(),
        concurrency=params.concurrency,
        blob_workers=params.blob_workers,
    ).start()
