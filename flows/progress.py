"""The progress of the operation a flow runs: opened in :mod:`tasks.runtime` as the flow
starts (tasks report to it, the CLI's display reads it), finished when the flow ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from d8mirror.progress import Progress
from tasks import runtime


@contextmanager
def reporting(operation: str) -> Iterator[Progress]:
    """A fresh progress for ``operation`` (pull, push, upload, download) while the block
    runs; finished on the way out, whatever the outcome."""
    progress = runtime.open_progress(operation)
    try:
        yield progress
    finally:
        progress.finish()
