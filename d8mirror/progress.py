"""Progress of one operation (pull, push, upload, download), tallied while bytes move.

    totals   the unique blobs (digest → size) the operation expects to move, declared as
             manifests are read or all at once from a sized plan (:meth:`Progress.expect`);
             a digest counts once however many images or packages share it
    done     bytes streamed (:meth:`Progress.moved`), blobs finished
             (:meth:`Progress.blob_done`), and blobs that needed no transfer: in the blob
             store, already at the target (:meth:`Progress.reused`); a reused blob's bytes
             count as done at once, and are shown apart from the bytes moved
    items    what a person follows: packages on pull, layouts on push, files on upload and
             download, each with its phase (``resolve``, ``fetch``, ``pack``, ``push``,
             ``verify``, ``upload``, ``download``) and its own bytes; images are counted too
    view     a frozen snapshot with rate and ETA (:meth:`Progress.view`), for any reader:
             the terminal display, JSON lines, the Prefect progress artifact

Writers (fetch, push and transfer threads) and readers (display threads) share one object;
every method takes one lock and does a few additions, so reporting per streamed chunk
(~1 MiB) costs nothing measurable. Bytes reported for a blob never exceed its size, and a
finished blob counts exactly its size, so a download restarted after a fault does not
count twice. The core never creates one of its own: callers pass a :class:`Progress` (or
:meth:`Progress.item`, bound to one package or layout) where they want to be told.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Batched", "ItemProgress", "ItemView", "Progress", "ProgressView"]

#: Seconds of history the rate is averaged over.
RATE_WINDOW = 10.0
#: Bytes a streamed transfer gathers before it reports them (:class:`Batched`).
REPORT_EVERY = 1 << 20


@dataclass(frozen=True)
class ItemView:
    """One package, layout or file as it stands."""

    name: str
    phase: str
    bytes_done: int
    bytes_total: int
    done: bool


@dataclass(frozen=True)
class ProgressView:
    """The whole operation at one moment. ``bytes_done`` includes ``bytes_reused``."""

    operation: str
    phase: str
    bytes_done: int
    bytes_total: int
    bytes_reused: int
    blobs_done: int
    blobs_total: int
    blobs_reused: int
    images_done: int
    images_total: int
    items_done: int
    items_total: int
    elapsed: float
    rate: float  # bytes moved per second, averaged over the last RATE_WINDOW seconds
    finished: bool
    active: tuple[ItemView, ...] = ()

    @property
    def fraction(self) -> float:
        """Done over total, 1.0 when there is nothing to move (or the run finished whole)."""
        if self.bytes_total <= 0:
            return 1.0 if self.finished or self.items_total == self.items_done else 0.0
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while the rate is unknown."""
        left = self.bytes_total - self.bytes_done
        if left <= 0:
            return 0.0
        return left / self.rate if self.rate > 0 else None


@dataclass
class _Item:
    phase: str
    bytes_done: int = 0
    bytes_total: int = 0
    done: bool = False


@dataclass
class _Tally:
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_reused: int = 0
    bytes_moved: int = 0
    blobs_done: int = 0
    blobs_reused: int = 0
    images_done: int = 0
    images_total: int = 0
    items_total: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # expected blobs
    owners: dict[str, str] = field(default_factory=dict)  # blob → item that declared it
    partial: dict[str, int] = field(default_factory=dict)  # in flight: bytes so far
    finished: set[str] = field(default_factory=set)
    items: dict[str, _Item] = field(default_factory=dict)


class Progress:
    """The tally of one operation; see the module docstring."""

    def __init__(self, operation: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.operation = operation
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._t = _Tally()
        self._phase = "start"
        self._finished = False
        self._samples: deque[tuple[float, int]] = deque([(self._start, 0)])

    # -- what is expected ------------------------------------------------------------------
    def expect_items(self, count: int) -> None:
        """The number of packages, layouts or files the operation will go through."""
        with self._lock:
            self._t.items_total = max(self._t.items_total, count)

    def expect(
        self, blobs: dict[str, int] | list[tuple[str, int]], item: str | None = None
    ) -> None:
        """Blobs (digest → size) the operation will move or find present; a digest already
        expected is not counted again (its bytes belong to the item that declared it first)."""
        pairs = blobs.items() if isinstance(blobs, dict) else blobs
        with self._lock:
            t = self._t
            for digest, size in pairs:
                if digest in t.sizes:
                    continue
                t.sizes[digest] = size
                t.bytes_total += size
                if item is not None:
                    t.owners[digest] = item
                    self._item(item).bytes_total += size

    def expect_images(self, count: int) -> None:
        with self._lock:
            self._t.images_total += count

    # -- what happens ----------------------------------------------------------------------
    def phase(self, phase: str) -> None:
        """The operation's phase (``discover``, ``resolve``, ``fetch``, ``pack``, …)."""
        with self._lock:
            self._phase = phase

    def item_phase(self, name: str, phase: str) -> None:
        """``name`` (package, layout, file) is now in ``phase``."""
        with self._lock:
            self._item(name).phase = phase

    def item_done(self, name: str) -> None:
        with self._lock:
            self._item(name).done = True

    def moved(self, digest: str, count: int) -> None:
        """``count`` more bytes of ``digest`` streamed (download or upload)."""
        with self._lock:
            t = self._t
            if digest in t.finished:
                return
            size = t.sizes.get(digest)
            before = t.partial.get(digest, 0)
            after = before + count if size is None else min(size, before + count)
            t.partial[digest] = after
            self._add_done(digest, after - before)
            t.bytes_moved += after - before

    def blob_done(self, digest: str, size: int) -> None:
        """``digest`` is complete (it was moved): it counts exactly ``size`` bytes."""
        self._finish(digest, size, reused=False)

    def reused(self, digest: str, size: int) -> None:
        """``digest`` needed no transfer (blob store, already at the target, mounted)."""
        self._finish(digest, size, reused=True)

    def image_done(self, count: int = 1) -> None:
        with self._lock:
            self._t.images_done += count

    def finish(self) -> None:
        """The operation ended (whatever its outcome): readers print their last line."""
        with self._lock:
            self._finished = True
            self._phase = "done"

    # -- reading ---------------------------------------------------------------------------
    def view(self) -> ProgressView:
        now = self._clock()
        with self._lock:
            t = self._t
            self._samples.append((now, t.bytes_moved))
            while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
                self._samples.popleft()
            then, moved_then = self._samples[0]
            rate = (t.bytes_moved - moved_then) / (now - then) if now > then else 0.0
            return ProgressView(
                operation=self.operation,
                phase=self._phase,
                bytes_done=t.bytes_done,
                bytes_total=max(t.bytes_total, t.bytes_done),
                bytes_reused=t.bytes_reused,
                blobs_done=len(t.finished),
                blobs_total=max(len(t.sizes), len(t.finished)),
                blobs_reused=t.blobs_reused,
                images_done=t.images_done,
                images_total=max(t.images_total, t.images_done),
                items_done=sum(1 for i in t.items.values() if i.done),
                items_total=max(t.items_total, len(t.items)),
                elapsed=now - self._start,
                rate=rate,
                finished=self._finished,
                active=tuple(
                    ItemView(name, i.phase, i.bytes_done, i.bytes_total, i.done)
                    for name, i in t.items.items()
                    if not i.done
                ),
            )

    def item(self, name: str) -> ItemProgress:
        """This progress, bound to one package, layout or file."""
        return ItemProgress(self, name)

    # -- inside the lock -------------------------------------------------------------------
    def _item(self, name: str) -> _Item:
        item = self._t.items.get(name)
        if item is None:
            item = self._t.items[name] = _Item(phase="queued")
        return item

    def _add_done(self, digest: str, count: int) -> None:
        self._t.bytes_done += count
        owner = self._t.owners.get(digest)
        if owner is not None:
            self._t.items[owner].bytes_done += count

    def _finish(self, digest: str, size: int, *, reused: bool) -> None:
        with self._lock:
            t = self._t
            if digest in t.finished:
                return
            if digest not in t.sizes:
                t.sizes[digest] = size
                t.bytes_total += size
            t.finished.add(digest)
            already = t.partial.pop(digest, 0)
            self._add_done(digest, size - already)
            if reused:
                t.blobs_reused += 1
                t.bytes_reused += size
            else:
                t.bytes_moved += size - already


class ItemProgress:
    """A :class:`Progress` bound to one item: what the core is handed for one package or
    layout (blobs it declares are that item's bytes)."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name = progress, name

    def phase(self, phase: str) -> None:
        self.progress.item_phase(self.name, phase)

    def expect(self, blobs: dict[str, int] | list[tuple[str, int]]) -> None:
        self.progress.expect(blobs, item=self.name)

    def expect_images(self, count: int) -> None:
        self.progress.expect_images(count)

    def moved(self, digest: str, count: int) -> None:
        self.progress.moved(digest, count)

    def blob_done(self, digest: str, size: int) -> None:
        self.progress.blob_done(digest, size)

    def reused(self, digest: str, size: int) -> None:
        self.progress.reused(digest, size)

    def image_done(self, count: int = 1) -> None:
        self.progress.image_done(count)

    def done(self) -> None:
        self.progress.item_done(self.name)


class Batched:
    """``report(n)`` once per :data:`REPORT_EVERY` bytes or so, however small the pieces a
    transfer streams (socket reads of 64 KiB, boto3's reads of 8 KiB), from one thread or
    several: what a transfer's ``on_progress`` is given, so the tally's lock is taken about
    once per MiB. Bytes still gathered when the transfer ends are never reported: the
    blob's :meth:`Progress.blob_done` counts it whole."""

    def __init__(self, report: Callable[[int], None], every: int = REPORT_EVERY) -> None:
        self.report, self.every = report, every
        self._pending = 0
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self._pending += count
            if self._pending < self.every:
                return
            count, self._pending = self._pending, 0
        self.report(count)
