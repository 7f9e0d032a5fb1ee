"""The progress of the operation a flow runs: opened in :mod:`tasks.runtime` as the flow
starts (tasks report to it, the CLI's display reads it), finished when the flow ends.

In the Prefect UI the same progress is a progress artifact on the flow run (key
``<operation>-progress``: ``pull-progress``, ``push-progress``, ``upload-progress``,
``download-progress``), whoever started the run (CLI, deployment, schedule, the UI's Retry).
One daemon thread per run (:class:`ArtifactFeed`) reads :meth:`Progress.view` every
:data:`ARTIFACT_INTERVAL` seconds and sends the percentage (bytes done over the unique bytes
expected, one decimal) and a line a person reads (``pull: 12.3 GiB/40.1 GiB, 85.0 MiB/s,
ETA 5m40s, packages 3/12``) only when they changed: one small PATCH every few seconds at
most, nothing per byte. A run that ends whole ends at 100; a failed or cancelled run keeps
its last real value; a retried run (same flow run) starts its artifact again at 0. The
artifact is an aid, never a cause of failure: an API error is logged and the run goes on.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from uuid import UUID

from d8mirror.progress import Progress, ProgressView
from d8mirror.units import human_duration, human_rate, human_size
from tasks import runtime

__all__ = ["ARTIFACT_INTERVAL", "ArtifactFeed", "artifact_key", "describe", "reporting"]

#: Seconds between two reads of the progress by the artifact thread.
ARTIFACT_INTERVAL = 3.0
#: At most this long is waited for the thread's last update as the flow ends.
_JOIN_TIMEOUT = 10.0
#: What a person follows in each operation (the progress's items).
_ITEMS = {"pull": "packages", "push": "layouts", "upload": "files", "download": "files"}

log = logging.getLogger(__name__)


def artifact_key(operation: str) -> str:
    """``pull-progress``…: artifact keys are lowercase letters, digits and dashes."""
    cleaned = "".join(c if c.isalnum() else "-" for c in operation.lower()).strip("-")
    return f"{cleaned or 'run'}-progress"


def percent(view: ProgressView, *, whole: bool = False) -> float:
    """Bytes done over bytes expected, in percent with one decimal (items done over items
    while no byte is expected yet, 0 while nothing is known: unlike the view's fraction, a
    run that ended without its bytes is not complete); 100 for a run that finished whole."""
    if whole:
        return 100.0
    if view.bytes_total > 0:
        return round(min(1.0, view.bytes_done / view.bytes_total) * 100, 1)
    if view.items_total > 0:
        return round(view.items_done / view.items_total * 100, 1)
    return 0.0


def describe(view: ProgressView) -> str:
    """``pull: 12.3 GiB/40.1 GiB (2.0 GiB reused), 85.0 MiB/s, ETA 5m40s, packages 3/12``:
    the artifact's description (rate and ETA while bytes move)."""
    parts = [f"{human_size(view.bytes_done)}/{human_size(view.bytes_total)}"]
    if view.bytes_reused:
        parts[0] += f" ({human_size(view.bytes_reused)} reused)"
    if view.rate > 0 and not view.finished:
        parts.append(human_rate(view.rate))
        if (eta := view.eta) is not None and eta > 0:
            parts.append(f"ETA {human_duration(eta)}")
    if view.items_total:
        items = _ITEMS.get(view.operation, "items")
        parts.append(f"{items} {view.items_done}/{view.items_total}")
    return f"{view.operation}: {', '.join(parts)}"


class ArtifactFeed:
    """The progress artifact of one flow run and the one thread that keeps it current."""

    def __init__(self, progress: Progress, *, interval: float | None = None) -> None:
        self.progress = progress
        self.interval = ARTIFACT_INTERVAL if interval is None else interval
        self.artifact_id: UUID | None = None
        self._sent: tuple[float, str] | None = None
        self._stop = threading.Event()
        self._whole = False
        self._thread: threading.Thread | None = None
        self._failures = 0

    def start(self) -> ArtifactFeed:
        """Create the artifact (0 %) on the current flow run and start the thread; outside a
        flow run, or when the API refuses, there is no artifact and no thread."""
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext

        run = FlowRunContext.get()
        if run is None or run.flow_run is None:
            return self
        key, view = artifact_key(self.progress.operation), self.progress.view()
        try:
            self.artifact_id = _restart(run.flow_run.id, key, describe(view))
            if self.artifact_id is None:
                created = create_progress_artifact(0.0, key=key, description=describe(view))
                # Called from the flow's (sync) code: the sync variant returned the id.
                self.artifact_id = cast(UUID, created)
        except Exception as exc:  # an aid only: the run goes on without it
            log.warning("progress artifact not created: %s: %s", type(exc).__name__, exc)
            return self
        self._sent = (0.0, describe(view))
        # The thread sees this run's settings (the API it talks to) as the flow does.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._run,),
            name=f"d8mirror-{artifact_key(self.progress.operation)}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, *, whole: bool) -> None:
        """The run ended: the thread sends its last value (100 when ``whole``) and ends."""
        self._whole = whole
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                while not self._stop.wait(self.interval):
                    self._publish(client, whole=False)
                self._publish(client, whole=self._whole)
        except Exception as exc:  # the client could not even start: no updates, no harm
            log.warning("progress artifact not updated: %s: %s", type(exc).__name__, exc)

    def _publish(self, client: Any, *, whole: bool) -> None:
        """Send the current value when it differs from the last one sent."""
        from prefect.client.schemas.actions import ArtifactUpdate

        view = self.progress.view()
        value = (percent(view, whole=whole), describe(view))
        if value == self._sent or self.artifact_id is None:
            return
        try:
            client.update_artifact(
                self.artifact_id, ArtifactUpdate(data=value[0], description=value[1])
            )
        except Exception as exc:  # an API hiccup: try again at the next tick
            self._failures += 1
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "progress artifact not updated: %s: %s", type(exc).__name__, exc)
            return
        self._sent = value


def _restart(flow_run_id: UUID, key: str, description: str) -> UUID | None:
    """The run's own progress artifact back at 0 when the run has one already (the UI's
    Retry runs the flow again in the same flow run: one progress artifact, not one per
    attempt); None when it has none."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            ),
            limit=1,
        )
        if not found:
            return None
        client.update_artifact(found[0].id, ArtifactUpdate(data=0.0, description=description))
        return found[0].id


@contextmanager
def reporting(operation: str) -> Iterator[Progress]:
    """A fresh progress for ``operation`` (pull, push, upload, download) while the block
    runs, fed to the run's progress artifact; finished on the way out, whatever the outcome.
    The artifact ends at 100 only when the block returned and no stop was requested."""
    progress = runtime.open_progress(operation)
    feed = ArtifactFeed(progress).start()
    whole = False
    try:
        yield progress
        whole = not runtime.stop_requested()
    finally:
        progress.finish()
        feed.stop(whole=whole)
