"""Work ahead of a pull: fetch the packages' main images into the blob store while the caller
waits for something else (the CLI: its local Prefect API server, ~4 s of start-up).

Only a cache warmer, built from the pull's own stages: it discovers the packages, plans each
one (:func:`~d8mirror.pull.plan.plan_package`) and fetches the plan's main images into the
run's store (the one store object of that root in the process), in the order the pull fetches
them (packages in discovery order, ``concurrency`` at once, ``blob_workers`` blobs each). It
writes nothing else: no layout, no archive, no record. The pull then finds those blobs in the
store and reports them as reused (the warm-up's own line says what it fetched). A blob both
want at once is downloaded once (the store's download lock). Nothing is retried: every error
is left for the pull, which meets it again, retries and reports it.

:meth:`StoreWarmer.stop` lets downloads that already started finish (the pull needs those
bytes) and starts nothing new; :meth:`StoreWarmer.join` waits for them.

With ``manifests_only`` (a pull that checks its disk space before fetching) it reads the
plans' manifests only (:func:`~d8mirror.pull.sizing.size_package`), which the pull's sizing
then finds in the store; the plans' small channel images are fetched as a plan always does.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from d8mirror.blobstore import BlobStore
from d8mirror.errors import MirrorError
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy
from d8mirror.units import human_size

from .discovery import discover_packages
from .fetcher import ImageFetcher
from .options import PullOptions
from .plan import plan_package
from .sizing import size_package

log = logging.getLogger("d8mirror.pull.warmup")

#: A warm-up never retries: whatever fails is left to the pull (which retries and reports).
ONCE = RetryPolicy(attempts=1)


@dataclass
class WarmupTotals:
    """What a warm-up downloaded (blobs and bytes) before it stopped or ran out of work."""

    blobs: int = 0
    bytes: int = 0


def can_warm(options: PullOptions) -> bool:
    """Whether a warm-up knows what this pull fetches: the plain per-package pull of main
    images (not a dry-run, not only extra images, not a proxy registry's probing)."""
    return (
        options.per_package_phase
        and not options.dry_run
        and not options.only_extra_images
        and not options.proxy_registry
    )


class StoreWarmer:
    """Fetches the main images of the packages to pull into ``store``, on its own threads."""

    def __init__(
        self,
        client: RegistryClient,
        store: BlobStore,
        options: PullOptions,
        *,
        concurrency: int = 4,
        blob_workers: int = 4,
        manifests_only: bool = False,
    ) -> None:
        self.client = client
        self.manifests_only = manifests_only
        self.store = store
        self.options = options
        self.concurrency = max(1, concurrency)
        self.blob_workers = max(1, blob_workers)
        self.totals = WarmupTotals()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fetchers: list[ImageFetcher] = []
        self._lock = threading.Lock()

    def start(self) -> StoreWarmer:
        self._thread = threading.Thread(target=self._run, name="d8mirror-warmup", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Start nothing new (downloads already running finish)."""
        self._stop.set()

    def close(self) -> None:
        """After :meth:`join`: close the client."""
        self.client.close()

    def summary(self) -> str | None:
        """One line on what was fetched ahead (None when nothing was)."""
        if not self.totals.blobs:
            return None
        return (
            f"{self.totals.blobs} blobs ({human_size(self.totals.bytes)}) were fetched "
            "while the local Prefect API server started (the pull reports them as reused)"
        )

    def join(self, timeout: float | None = None) -> WarmupTotals:
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            fetchers = list(self._fetchers)
        self.totals = WarmupTotals(
            sum(f.stats.blobs_fetched for f in fetchers),
            sum(f.stats.bytes_fetched for f in fetchers),
        )
        return self.totals

    # -- the work -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            names = discover_packages(self.client, self.options, retry=ONCE).names
        except (MirrorError, OSError, ValueError) as exc:
            log.debug("warm-up: discovery failed, left to the pull: %s", exc)
            return
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="d8mirror-warmup"
        ) as pool:
            for future in [pool.submit(self._package, name) for name in names]:
                future.exception()

    def _fetcher(self) -> ImageFetcher:
        fetcher = ImageFetcher(
            self.client,
            self.store,
            blob_workers=self.blob_workers,
            should_stop=self._stop.is_set,
            retry=ONCE,
            stop_in_flight=False,
        )
        with self._lock:
            self._fetchers.append(fetcher)
        return fetcher

    def _package(self, name: str) -> None:
        """The first stages of the pull of ``name``: its plan, then its main images."""
        if self._stop.is_set():
            return
        fetcher = self._fetcher()
        repo = self.options.package_repo(name)
        try:
            plan = plan_package(fetcher, self.options, name)
            if self.manifests_only:  # the pull checks disk space before its first layer
                size_package(fetcher, self.options, plan)
                return
            for digest in plan.digests.values():
                if digest is not None:
                    fetcher.image(repo, digest)
        except (MirrorError, OSError, ValueError) as exc:  # FetchCancelled: stopped
            log.debug("warm-up of %s ended: %s", name, exc)
