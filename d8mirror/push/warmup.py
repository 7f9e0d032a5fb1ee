"""Work ahead of a push: put the bundle's blobs into the target registry while the caller
waits for something else (the CLI: its local Prefect API server, ~4 s of start-up in which
the target registry would sit idle).

It runs the push's own stages (:mod:`d8mirror.push.stages`), without retries:
:func:`check_bundle`, :func:`prepare_push_tree` (every archive must match its checksum sidecar,
else nothing is put) into a tree under the push's temp dir (``work_dir``, removed with every
directory the warm-up created by :meth:`PushWarmer.close`), then only the blobs of each layout
job (:func:`push_blobs_ahead`): never a manifest, so no tag appears and nothing is visible to
the registry's users (an unreferenced blob is what an interrupted push leaves too). Only a
bundle of plain tars is warmed (their large blobs are uploaded straight from the archive); one
with chunk sets is left to the push. Layouts go heaviest first, ``concurrency`` at once,
``blob_workers`` blobs each, like the push itself.

The push then finds those blobs present and reports them so; the warm-up reports its own
(:meth:`PushWarmer.summary`). Every error (a denied write included) ends the warm-up quietly:
the push meets it again and reports it. :meth:`PushWarmer.stop` starts no new blob;
:meth:`PushWarmer.join` waits for those already running.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from d8mirror.bundle import CheckedFiles, is_plain_tar
from d8mirror.errors import MirrorError
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient

from .blobs import BlobLocations
from .routing import Router
from .stages import LayoutJob, check_bundle, heaviest_first, prepare_push_tree, push_blobs_ahead
from .unified import WorkDir

log = logging.getLogger("d8mirror.push.warmup")


def _quiet(_message: str) -> None:
    """Warnings are the push's to report, not the warm-up's."""


class PushWarmer:
    """Puts the blobs of ``archives`` into ``target`` on its own threads."""

    def __init__(
        self,
        client: RegistryClient,
        archives: Sequence[Path],
        target: Repository,
        router: Router,
        work_dir: Path,
        *,
        locations: BlobLocations | None = None,
        checked: CheckedFiles | None = None,
        concurrency: int = 4,
        blob_workers: int = 4,
    ) -> None:
        self.client = client
        self.work = WorkDir(work_dir)
        self.archives = list(archives)
        self.target = target
        self.router = router
        self.concurrency = max(1, concurrency)
        self.blob_workers = max(1, blob_workers)
        self.locations = locations if locations is not None else BlobLocations()
        self.checked = checked
        self.blobs_put = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> PushWarmer:
        self._thread = threading.Thread(target=self._run, name="d8mirror-push-warmup", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> int:
        """Wait for the blobs already started; the number of blobs put."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.blobs_put

    def close(self) -> None:
        """After :meth:`join`: remove what the warm-up created, close the client."""
        self.work.cleanup()
        self.client.close()

    def summary(self) -> str | None:
        """One line on what was pushed ahead (None when nothing was)."""
        if not self.blobs_put:
            return None
        return (
            f"{self.blobs_put} blobs were pushed while the local Prefect API server "
            "started (the push finds them already present)"
        )

    # -- the work -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if not self.archives or not all(a.is_file() and is_plain_tar(a) for a in self.archives):
                return
            check_bundle(self.archives, self.target, self.router)
            tree = prepare_push_tree(
                self.archives,
                self.work,
                self.target,
                self.router,
                checked=self.checked,
                warn=_quiet,
            )
            with ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="d8mirror-push-warmup"
            ) as pool:
                for future in [pool.submit(self._layout, job) for job in heaviest_first(tree.jobs)]:
                    future.exception()
        except (MirrorError, OSError, ValueError) as exc:
            log.debug("push warm-up ended: %s", exc)
        finally:
            shutil.rmtree(self.work.unified, ignore_errors=True)

    def _layout(self, job: LayoutJob) -> None:
        if self._stop.is_set():
            return
        try:
            put = push_blobs_ahead(
                self.client,
                job,
                locations=self.locations,
                blob_workers=self.blob_workers,
                should_stop=self._stop.is_set,
            )
        except (MirrorError, OSError) as exc:
            log.debug("push warm-up of %s ended: %s", job.layout, exc)
            self._stop.set()  # a denied or failing target: leave it all to the push
            return
        with self._lock:
            self.blobs_put += put
