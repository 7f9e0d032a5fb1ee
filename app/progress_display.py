"""The live progress of a pull, push, upload or download on the terminal (``--progress``).

    rich    a TTY: one overall bar in bytes (done/total, rate, ETA), the counts of items,
            images and blobs, reused bytes apart from bytes moved, a line per active item
            with its phase and bytes (a ``rich`` Live display on stderr)
    plain   not a TTY (CI, cron, ``| tee``): a line every ``--progress-interval`` seconds and
            at each item's end, ``pull: 12.3/40.1 GiB (31%), 85.0 MiB/s, ETA 5m40s,
            packages 3/12``, and a final line
    json    the same moments as plain, one JSON object per line on stderr (for wrappers)
    none    nothing
    auto    rich on a TTY, plain otherwise

It reads what the flow's tasks tally (:func:`tasks.runtime.current_progress`) from ONE daemon
thread started around the flow call (:func:`shown`); it follows the current progress when it
changes (pull's ``--upload-to`` runs the upload in the same process) and prints a final line
when the flow ends. Nothing here is on the path of the bytes: a view is a few additions under
the tally's lock, taken a few times a second at most.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from d8mirror.progress import Progress, ProgressView
from d8mirror.units import human_duration, human_rate, human_size

MODES = ("auto", "rich", "plain", "json", "none")
DEFAULT_INTERVAL = 10.0
#: What the items of each operation are called on a progress line.
ITEM_WORDS = {"pull": "packages", "push": "layouts", "upload": "files", "download": "files"}
#: How often the rich display redraws (seconds).
RICH_REFRESH = 0.25
#: Active items shown at most on the rich display (the rest are counted on one line).
RICH_ITEMS = 8

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--progress`` and ``--progress-interval`` (pull, push, upload, download)."""
    parser.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="live progress on stderr: rich bar on a TTY, plain lines otherwise (auto), "
        "one JSON object per line (json), or none",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between plain/json lines (default {DEFAULT_INTERVAL:g}); "
        "a line is also printed as each item ends",
    )


# -- formatting ----------------------------------------------------------------------------------
def size_pair(done: int, total: int) -> str:
    """``12.3/40.1 GiB``: both in the unit of the total."""
    scaled, unit = float(max(total, done)), 0
    while scaled >= 1024 and unit < len(_UNITS) - 1:
        scaled /= 1024
        unit += 1
    if unit == 0:
        return f"{done}/{total} B"
    div = 1024**unit
    return f"{done / div:.1f}/{total / div:.1f} {_UNITS[unit]}"


def percent(view: ProgressView) -> int:
    """Whole percent, rounded down: 100 only when everything is done (nothing known yet
    is 0%, not 100%)."""
    if view.bytes_total <= 0 and not view.finished:
        return 0
    return int(view.fraction * 100)


def items_word(operation: str) -> str:
    return ITEM_WORDS.get(operation, "items")


def plain_line(view: ProgressView) -> str:
    """``pull: 12.3/40.1 GiB (31%), 85.0 MiB/s, ETA 5m40s, packages 3/12``; once finished,
    the average rate, the time it took (``done in``, or ``stopped after`` when a failed or
    cancelled run left work undone), and the blobs moved and reused."""
    head = f"{view.operation}: {size_pair(view.bytes_done, view.bytes_total)} ({percent(view)}%)"
    items = f"{items_word(view.operation)} {view.items_done}/{view.items_total}"
    if not view.finished:
        eta = "?" if view.eta is None else human_duration(view.eta)
        return f"{head}, {human_rate(view.rate)}, ETA {eta}, {items}"
    moved = view.bytes_done - view.bytes_reused
    average = moved / view.elapsed if view.elapsed > 0 else 0.0
    whole = view.bytes_done >= view.bytes_total and view.items_done >= view.items_total
    ended = "done in" if whole else "stopped after"  # a failed or cancelled run
    return (
        f"{head}, {human_rate(average)}, {ended} {human_duration(view.elapsed)}, {items}, "
        f"blobs {view.blobs_done}/{view.blobs_total} "
        f"({view.blobs_reused} reused, {human_size(view.bytes_reused)})"
    )


def json_record(view: ProgressView) -> dict[str, Any]:
    """What one JSON line says (every count exact, in bytes)."""
    return {
        "operation": view.operation,
        "phase": view.phase,
        "bytes_done": view.bytes_done,
        "bytes_total": view.bytes_total,
        "bytes_reused": view.bytes_reused,
        "blobs_done": view.blobs_done,
        "blobs_total": view.blobs_total,
        "blobs_reused": view.blobs_reused,
        "images_done": view.images_done,
        "images_total": view.images_total,
        "items_done": view.items_done,
        "items_total": view.items_total,
        "rate": round(view.rate, 1),
        "eta": None if view.eta is None else round(view.eta, 1),
        "elapsed": round(view.elapsed, 3),
        "finished": view.finished,
        "active": [
            {
                "name": i.name,
                "phase": i.phase,
                "bytes_done": i.bytes_done,
                "bytes_total": i.bytes_total,
            }
            for i in view.active
        ],
    }


def json_line(view: ProgressView) -> str:
    return json.dumps(json_record(view), separators=(",", ":"))


def rich_renderable(view: ProgressView, *, fixed: bool = False) -> Any:
    """The rich display of one view: the bar, the counts, bytes moved and reused, the active
    items. Every line is cut to the width (never wrapped); with ``fixed``, the frame always
    has the same height (see :meth:`Display._draw`)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def line(text: str, style: str = "") -> Text:
        return Text(text, style=style, no_wrap=True, overflow="ellipsis")

    eta = "?" if view.eta is None else human_duration(view.eta)
    top = Table.grid(padding=(0, 1), expand=True)
    top.add_column(no_wrap=True)
    top.add_column(ratio=1)  # the bar takes the width the texts leave
    top.add_column(no_wrap=True)
    top.add_row(
        Text(view.operation, style="bold"),
        ProgressBar(
            total=max(view.bytes_total, 1),
            completed=view.bytes_done,
            style="grey23",  # explicit: a console with its own theme (Prefect's) lacks bar.*
            complete_style="magenta",
            finished_style="green",
        ),
        Text(
            f"{size_pair(view.bytes_done, view.bytes_total)} ({percent(view)}%)  "
            f"{human_rate(view.rate)}  ETA {eta}"
        ),
    )
    counts = line(
        f"{items_word(view.operation)} {view.items_done}/{view.items_total}  "
        f"images {view.images_done}/{view.images_total}  "
        f"blobs {view.blobs_done}/{view.blobs_total}  "
        f"{view.phase}  {human_duration(view.elapsed)}"
    )
    moved = view.bytes_done - view.bytes_reused
    bytes_line = line(
        f"moved {human_size(moved)}  "
        f"reused {human_size(view.bytes_reused)} ({view.blobs_reused} blobs)",
        "dim",
    )
    items = Table.grid(padding=(0, 2))
    for _ in range(3):
        items.add_column(no_wrap=True, overflow="ellipsis")
    for item in view.active[:RICH_ITEMS]:
        items.add_row(
            Text(f"  {item.name}"),
            Text(item.phase, style="cyan"),
            Text(size_pair(item.bytes_done, item.bytes_total)),
        )
    more = len(view.active) - RICH_ITEMS
    rows: list[Any] = [top, counts, bytes_line, items]
    if more > 0:
        rows.append(line(f"  … and {more} more", "dim"))
    if fixed:
        shown = min(len(view.active), RICH_ITEMS) + (1 if more > 0 else 0)
        rows += [Text("")] * (RICH_ITEMS + 1 - shown)
    return Group(*rows)


# -- the display thread --------------------------------------------------------------------------
def resolve_mode(mode: str, stream: IO[str]) -> str:
    """``auto`` is rich on a TTY, plain otherwise."""
    if mode != "auto":
        return mode
    try:
        return "rich" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


class Display:
    """One daemon thread that shows the current progress in ``mode`` until :meth:`stop`."""

    def __init__(
        self, mode: str, interval: float = DEFAULT_INTERVAL, stream: IO[str] | None = None
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Progress | None = None
        self._last_line = 0.0
        self._items_done = 0
        self._ended = False
        self._live: Any = None

    def start(self) -> None:
        if self.mode == "none":
            return
        from tasks import runtime

        # an earlier command's progress (the demo pulls, then pushes, in one process) is
        # not this one's: shown only once the flow opened its own
        self._progress = runtime.current_progress()
        self._ended = True
        self._thread = threading.Thread(target=self._run, name="d8mirror-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The flow ended: the final line (the last frame on rich), then the thread ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- inside the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        tick = RICH_REFRESH if self.mode == "rich" else min(0.5, self.interval)
        try:
            while not self._stop.wait(tick):
                self._guarded(self._step)
            self._guarded(self._step)
            self._guarded(self._end)
        finally:
            self._stop_live()

    def _guarded(self, step: Callable[[], None]) -> None:
        """A display that cannot draw (an odd terminal) falls back to plain lines; it never
        takes the run down."""
        try:
            step()
        except Exception:
            if self.mode != "rich":
                raise
            self._stop_live()
            self.mode = "plain"

    def _current(self) -> Progress | None:
        from tasks import runtime

        progress = runtime.current_progress()
        if progress is not self._progress:
            self._end()  # e.g. pull's upload took over: the pull's last line
            self._progress, self._ended, self._items_done = progress, False, 0
            self._last_line = time.monotonic()
        return progress

    def _step(self) -> None:
        progress = self._current()
        if progress is None or self._ended:
            return
        view = progress.view()
        if self.mode == "rich":
            self._draw(view)
            return
        now = time.monotonic()
        item_ended = view.items_done > self._items_done
        if view.finished:
            self._end()
        elif item_ended or now - self._last_line >= self.interval:
            self._emit(view)
            self._last_line, self._items_done = now, view.items_done

    def _end(self) -> None:
        """The last line of the progress shown now (once)."""
        if self._ended or self._progress is None:
            return
        self._ended = True
        view = self._progress.view()
        if self.mode == "rich":
            self._draw(view)
            self._stop_live()
            self._write(plain_line(view))
        else:
            self._emit(view)

    def _emit(self, view: ProgressView) -> None:
        self._write(json_line(view) if self.mode == "json" else plain_line(view))

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe: the run goes on without a display
            self._stop.set()

    def _draw(self, view: ProgressView) -> None:
        # While the run goes on, the frame keeps one height: a log line printed by another
        # thread through the same console (rendered there, written a moment later) then
        # always finds the frame where it expects it. The last frame is compact.
        frame = rich_renderable(view, fixed=not self._stop.is_set())
        if self._live is None:
            self._live = self._start_live(frame)
            if self._live is None:
                return
        self._live.update(frame, refresh=True)

    def _start_live(self, frame: Any) -> Any:
        """A rich Live on the console Prefect's log lines go through (they then print above
        the display, not through it), else on a console of its own."""
        from rich.console import Console
        from rich.errors import LiveError
        from rich.live import Live

        consoles = [_log_console(self.stream), Console(file=self.stream)]
        for console in [c for c in consoles if c is not None]:
            live = Live(
                frame,
                console=console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            try:
                live.start()
            except LiveError:  # that console shows another live display already
                continue
            return live
        return None

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()


def _log_console(stream: IO[str]) -> Any:
    """The rich console of Prefect's console log handler when it writes to ``stream`` (it
    is read here, never changed): the live display drawn through that same console keeps
    the log lines printed meanwhile above it. None without one."""
    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:  # pragma: no cover - Prefect is a dependency
        return None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and handler.stream is stream:
            return handler.console
    return None


@contextmanager
def shown(args: argparse.Namespace) -> Iterator[None]:
    """The progress display of ``args`` (``--progress``, ``--progress-interval``) around the
    flow call of a command."""
    display = Display(
        getattr(args, "progress", "auto"),
        getattr(args, "progress_interval", DEFAULT_INTERVAL),
    )
    display.start()
    try:
        yield
    finally:
        display.stop()
