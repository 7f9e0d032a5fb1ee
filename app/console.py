"""What the terminal shows of a run: the error block of an expected failure, and Prefect's
console log lines made quiet enough to read.

    show_error(exc, items, verbose)   one short block on stderr for an error of d8mirror's tree
                                      (:func:`d8mirror.diagnostics.diagnose`): ``error:
                                      <category>``, what failed, where, the cause, the failed
                                      items, hints; with ``verbose`` the traceback first
    quiet_console(verbose)            while a flow runs: Prefect's console handler (the root
                                      logger's PrefectConsoleHandler, logging.yml) drops the
                                      traceback of an expected error (the block says it), and
                                      on a TTY Prefect's own INFO lines (task created, finished
                                      in Completed...) and its records of an expected error
                                      unless ``verbose``; d8mirror's own lines, and other
                                      warnings and errors, always pass

Only the console handler is touched: the API handler (APILogHandler) still sends every line
and the full traceback to the run's logs in Prefect. Records are never changed in place (the
handlers share them): a traceback is dropped by formatting a copy.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from d8mirror.diagnostics import diagnose, is_expected


def render_error(exc: BaseException, items: Sequence[tuple[str, str]] = ()) -> str:
    """The block for ``exc`` (an error of d8mirror's tree), lines joined, no trailing newline."""
    told = diagnose(exc, items)
    lines = [f"error: {told.category}", f"  {told.what}"]
    lines += [f"  {label}: {value}" for label, value in told.where]
    if told.cause:
        lines.append(f"  cause: {told.cause}")
    lines += [f"  failed: {name}: {cause}" for name, cause in told.items]
    lines += [f"  hint: {hint}" for hint in told.hints]
    return "\n".join(lines)


def show_error(
    exc: BaseException,
    items: Sequence[tuple[str, str]] = (),
    *,
    verbose: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Print the block for ``exc`` on stderr; with ``verbose`` its traceback before it."""
    out = stream or sys.stderr
    if verbose:
        traceback.print_exception(exc, file=out)
    print(render_error(exc, items), file=out, flush=True)


class ToldTracebacks(logging.Formatter):
    """Formats as ``inner`` does, without the traceback of an expected error."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_expected(error):
            record = copy.copy(record)  # the API handler keeps the original
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return self.inner.format(record)


class QuietEngine(logging.Filter):
    """Drops what Prefect's own code logs below WARNING (run created, finished in Completed,
    hooks, "View at"), and its "Encountered exception" records of an expected error (the
    error block tells it); d8mirror's lines, other warnings and errors pass."""

    def __init__(self, prefect_dir: str) -> None:
        super().__init__()
        self.prefect_dir = prefect_dir

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.prefect_dir):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_expected(error):
            return False
        return record.levelno >= logging.WARNING


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    return [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]


def _is_tty(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


@contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Prefect's console handlers as the module docstring says, restored on exit (Prefect is
    imported: its logging is configured at import)."""
    if verbose:
        yield
        return
    import prefect

    prefect_dir = os.path.dirname(prefect.__file__) + os.sep
    changed: list[tuple[logging.Handler, logging.Formatter | None, logging.Filter | None]] = []
    for handler in _console_handlers():
        quiet: logging.Filter | None = QuietEngine(prefect_dir) if _is_tty(handler) else None
        if quiet is not None:
            handler.addFilter(quiet)
        changed.append((handler, handler.formatter, quiet))
        handler.setFormatter(ToldTracebacks(handler.formatter))
    try:
        yield
    finally:
        for handler, formatter, quiet in changed:
            handler.setFormatter(formatter)
            if quiet is not None:
                handler.removeFilter(quiet)
