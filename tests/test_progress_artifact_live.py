"""A real pull's progress artifact moves while bytes move (needs the core's byte reporting)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request
from test_progress_artifact import _run_id, _value

from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")


def _running_pull() -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-pull"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
    return runs[0] if runs else None


def test_a_pull_shows_intermediate_values_while_its_blobs_download(
    registry: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.progress
    from flows.pull import mirror_pull
    from tasks.models import PullParameters

    monkeypatch.setattr(flows.progress, "ARTIFACT_INTERVAL", 0.1)
    blob_gets: list[str] = []

    def hold_after_ten(request: Request) -> bool:  # ten blobs through, the rest held
        if request.method == "GET" and "/blobs/" in request.path:
            blob_gets.append(request.path)
            return len(blob_gets) > 10
        return False

    with FaultProxy(registry.host, hold=hold_after_ten, hold_timeout=120) as proxy:
        params = PullParameters(
            bundle_dir=str(tmp_path / "bundle"),
            source=f"{proxy.host}/deckhouse/ee",
            insecure=True,
            include_packages=["console"],
        )
        ended: dict[str, Any] = {}
        pull = threading.Thread(
            target=lambda: ended.update(state=mirror_pull(params, return_state=True))
        )
        pull.start()
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen and 0 < seen[-1] < 100):
            time.sleep(0.1)
            if proxy.holding and (run := _running_pull()) is not None:
                with contextlib.suppress(ValueError):  # not created yet
                    seen.append(_value(run.id, "pull-progress")[0])
        proxy.release()
        pull.join(120)
    assert seen and 0 < seen[-1] < 100, seen
    state = ended["state"]
    assert state.is_completed(), state
    assert _value(_run_id(state), "pull-progress")[0] == 100.0
