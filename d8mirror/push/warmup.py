"""Work ahead of a push: put the bundle's blobs into the target registry while the caller
waits for something else (the CLI: its local Prefect API server, ~4 s of start-up in which
the target registry would sit idle).

Only blobs, never a manifest, so no tag appears and nothing is visible to the registry's users
(an unreferenced blob is what an interrupted push leaves too). The same guarantees as the push
come first: every archive must match its checksum sidecar, else nothing is put. Plain tars
only (their large blobs are uploaded straight from the archive; the small files go into a
tree under the push's own temp dir, removed with every directory the warm-up created for it
by :meth:`PushWarmer.close`); chunk sets are left to the push. Layouts go heaviest
first, ``concurrency`` at once, ``blob_workers`` blobs each, like the push itself.

The push then HEADs each blob, finds it present and counts it as uploaded (or mounted) by
itself (:class:`BlobLocations`), so its summary reads the same with or without a warm-up.
Every error (a denied write included) ends the warm-up quietly: the push meets it again and
reports it. :meth:`PushWarmer.stop` starts no new blob; :meth:`PushWarmer.join` waits for
those already running.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from d8mirror.bundle import SIDECAR_WORKERS, check_archive_sidecars, is_plain_tar
from d8mirror.errors import MirrorError
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient

from .blobs import BlobLocations
from .pusher import push_layout_blobs
from .routing import Router
from .service import LayoutJob, heaviest_first, job_spans, job_weight, plan_jobs
from .unified import WorkDir, unpack_all
from .validate import refuse_invalid

log = logging.getLogger("d8mirror.push.warmup")

class PushWarmer:
    """Puts the blobs of ``archives`` into ``target`` on its own threads."""

    def __init__(self, client: RegistryClient, archives: Sequence[Path], target: Repository,
                 router: Router, work_dir: Path, *, concurrency: int = 4,
                 blob_workers: int = 4) -> None:
        self.client = client
        self.work = WorkDir(work_dir)
        self.archives = list(archives)
        self.target = target
        self.router = router
        self.concurrency = max(1, concurrency)
        self.blob_workers = max(1, blob_workers)
        self.locations = BlobLocations.shared(client.registry)
        self.blobs_put = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> PushWarmer:
        self._thread = threading.Thread(target=self._run, name="d8mirror-push-warmup",
                                        daemon=True)
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
        return f"{self.blobs_put} blobs were pushed while the local Prefect API server started"

    # -- the work -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            plain = [a for a in self.archives if a.is_file() and is_plain_tar(a)]
            if not plain or not self._checksums_match():
                return
            refuse_invalid(self.archives, repository_of=lambda rel: self.router.repository(
                self.target, rel))   # the push's own checks: a bad bundle gets no blob
            unified = self.work.prepare()
            unpack_all(plain, unified, warn=lambda _message: None)
            jobs = heaviest_first(plan_jobs(unified, self.target, self.router,
                                            warn=lambda _message: None), job_weight)
            with ThreadPoolExecutor(max_workers=self.concurrency,
                                    thread_name_prefix="d8mirror-push-warmup") as pool:
                for future in [pool.submit(self._layout, job) for job in jobs]:
                    future.exception()
        except (MirrorError, OSError, ValueError) as exc:
            log.debug("push warm-up ended: %s", exc)
        finally:
            shutil.rmtree(self.work.unified, ignore_errors=True)

    def _checksums_match(self) -> bool:
        with ThreadPoolExecutor(max_workers=SIDECAR_WORKERS) as pool:
            try:
                return not any(pool.map(check_archive_sidecars, self.archives))
            except (MirrorError, OSError):
                return False

    def _layout(self, job: LayoutJob) -> None:
        if self._stop.is_set():
            return
        try:
            put = push_layout_blobs(self.client, Path(job.directory), job.layout, job.repository,
                                    locations=self.locations, blob_workers=self.blob_workers,
                                    spans=job_spans(job.spans), should_stop=self._stop.is_set)
        except (MirrorError, OSError) as exc:
            log.debug("push warm-up of %s ended: %s", job.layout, exc)
            self._stop.set()   # a denied or failing target: leave it all to the push
            return
        with self._lock:
            self.blobs_put += put
