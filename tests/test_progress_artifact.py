"""The progress artifact of a flow run (issue 16, Prefect UI), read back from Prefect's API:
intermediate values reach it as a progress moves, a completed pull, push, upload and download
end at 100, a failed run keeps its last real value, and an API error never breaks a run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from push_bundle_builder import PackageSpec, build_bundle
from transfer_support import make_bundle

from d8mirror.progress import Progress
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")


def _progress_artifacts(flow_run_id: UUID, key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )
        )


def _value(flow_run_id: UUID, key: str) -> tuple[float, str]:
    """The one progress artifact ``key`` of the run: its value and description."""
    [artifact] = _progress_artifacts(flow_run_id, key)
    assert artifact.type == "progress"
    return float(artifact.data), str(artifact.description)


def _until(read: Callable[[], float], expected: float, timeout: float = 10.0) -> float:
    """Poll the API until the artifact holds ``expected`` (the thread sends on its tick)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def _run_id(state: Any) -> UUID:
    return UUID(str(state.state_details.flow_run_id))


def _current_run_id() -> UUID:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    return context.flow_run.id


# -- the feed, driven by hand ----------------------------------------------------------------------
def test_intermediate_values_reach_the_artifact_as_bytes_move() -> None:
    from prefect import flow

    from flows.progress import ArtifactFeed

    @flow(name="progress-feed-by-hand")
    def by_hand() -> list[tuple[float, str]]:
        run = _current_run_id()
        progress = Progress("pull", clock=lambda: 0.0)  # no rate: a stable description
        progress.expect_items(2)
        progress.item("a").expect({f"sha256:{i}": 256 * 1024 for i in range(4)})
        feed = ArtifactFeed(progress, interval=0.05).start()
        seen = [_value(run, "pull-progress")]
        for i in range(3):
            progress.moved(f"sha256:{i}", 128 * 1024)  # half a blob streamed…
            _until(lambda: _value(run, "pull-progress")[0], 12.5 + 25 * i)
            seen.append(_value(run, "pull-progress"))
            progress.blob_done(f"sha256:{i}", 256 * 1024)  # …then the whole blob
            _until(lambda: _value(run, "pull-progress")[0], 25.0 * (i + 1))
            seen.append(_value(run, "pull-progress"))
        progress.item_done("a")
        progress.finish()
        feed.stop(whole=False)  # as a failed run: the last real value stays
        seen.append(_value(run, "pull-progress"))
        return seen

    seen = by_hand()
    assert [value for value, _ in seen] == [0.0, 12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 75.0]
    assert seen[4][1] == "pull: 512.0 KiB/1.0 MiB, packages 0/2"
    assert seen[-1][1] == "pull: 768.0 KiB/1.0 MiB, packages 1/2"


def test_the_artifact_is_sent_only_when_its_value_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One thread, ticking often; a PATCH only for a new value (nothing per byte)."""
    import threading

    from prefect import flow
    from prefect.client.orchestration import SyncPrefectClient

    from flows.progress import ArtifactFeed

    sent: list[Any] = []
    original = SyncPrefectClient.update_artifact

    def counting(self: SyncPrefectClient, artifact_id: UUID, artifact: Any) -> None:
        sent.append(artifact.data)
        original(self, artifact_id, artifact)

    monkeypatch.setattr(SyncPrefectClient, "update_artifact", counting)

    @flow(name="progress-feed-quiet")
    def quiet() -> int:
        progress = Progress("push", clock=lambda: 0.0)
        progress.expect({"sha256:a": 1000})
        feed = ArtifactFeed(progress, interval=0.01).start()
        threads = [t for t in threading.enumerate() if t.name == "d8mirror-push-progress"]
        time.sleep(0.3)  # ~30 ticks, nothing new
        for _ in range(1000):
            progress.moved("sha256:a", 1)  # a thousand reports between two ticks
        time.sleep(0.3)
        feed.stop(whole=True)
        return len(threads)

    assert quiet() == 1
    # ~60 ticks: the bytes sent once (twice if a tick fell among the reports); whole: 100
    assert sent[-1] == 100.0 and len(sent) <= 2, sent


def test_a_run_that_fails_keeps_its_last_real_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow

    import flows.progress
    from flows.progress import reporting

    monkeypatch.setattr(flows.progress, "ARTIFACT_INTERVAL", 0.05)

    @flow(name="progress-failing-run")
    def failing() -> None:
        run = _current_run_id()
        with reporting("push") as progress:
            progress.expect({"sha256:a": 300, "sha256:b": 100})
            progress.reused("sha256:a", 300)
            assert _until(lambda: _value(run, "push-progress")[0], 75.0) == 75.0
            raise RuntimeError("the registry went away")

    state = failing(return_state=True)
    assert state.is_failed()
    value, description = _value(_run_id(state), "push-progress")
    assert value == 75.0
    assert description == "push: 300 B/400 B (300 B reused)"


def test_a_retried_run_keeps_one_artifact_that_ends_at_100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flow-run retry (the UI's Retry, or retries=) runs the flow again in the same flow
    run: its progress artifact starts again at 0, it is not a second one."""
    from prefect import flow

    import flows.progress
    from flows.progress import reporting

    monkeypatch.setattr(flows.progress, "ARTIFACT_INTERVAL", 0.05)
    attempts: list[float] = []

    @flow(name="progress-retried-run", retries=1, retry_delay_seconds=0)
    def flaky() -> None:
        run = _current_run_id()
        with reporting("upload") as progress:
            if attempts:  # the retry starts from 0 in the same artifact
                attempts.append(_value(run, "upload-progress")[0])
                return
            progress.expect({"sha256:a": 100, "sha256:b": 100})
            progress.blob_done("sha256:a", 100)
            attempts.append(_until(lambda: _value(run, "upload-progress")[0], 50.0))
            raise RuntimeError("first attempt fails")

    state = flaky(return_state=True)
    assert state.is_completed(), state
    assert attempts == [50.0, 0.0]
    [artifact] = _progress_artifacts(_run_id(state), "upload-progress")
    assert float(artifact.data) == 100.0


def test_an_api_error_is_logged_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from prefect import flow

    from flows.progress import ArtifactFeed

    @flow(name="progress-api-error")
    def unlucky() -> str:
        progress = Progress("download")
        feed = ArtifactFeed(progress, interval=0.01).start()
        assert feed.artifact_id is not None
        feed.artifact_id = uuid4()  # an artifact the API does not know: every PATCH fails
        progress.moved("sha256:x", 10)
        time.sleep(0.2)
        feed.stop(whole=True)
        return "finished"

    assert unlucky() == "finished"
    failures = [r for r in caplog.records if "progress artifact not updated" in r.getMessage()]
    assert failures and failures[0].levelname == "WARNING"
    assert all(r.levelname == "DEBUG" for r in failures[1:])


def test_percent_is_bytes_then_items_and_nothing_known_is_zero() -> None:
    from flows.progress import percent

    progress = Progress("push")
    assert percent(progress.view()) == 0.0
    progress.finish()  # ended with nothing known (a failure before any manifest): not done
    assert percent(progress.view()) == 0.0
    assert percent(progress.view(), whole=True) == 100.0
    progress = Progress("push")
    progress.expect_items(3)
    progress.item_done("a")
    assert percent(progress.view()) == 33.3  # no byte expected yet: items
    progress.expect({"sha256:a": 3000})
    progress.moved("sha256:a", 1000)
    assert percent(progress.view()) == 33.3  # bytes from now on
    progress.moved("sha256:a", 1001)
    assert percent(progress.view()) == 66.7


def test_the_description_carries_rate_and_eta_while_bytes_move() -> None:
    from flows.progress import describe

    now = [0.0]
    progress = Progress("pull", clock=lambda: now[0])
    progress.expect_items(12)
    progress.expect({"sha256:a": 40 << 30, "sha256:b": 2 << 30})
    progress.reused("sha256:b", 2 << 30)
    progress.view()
    now[0] = 10.0
    progress.moved("sha256:a", 850 << 20)  # 85 MiB/s over 10 s
    assert describe(progress.view()) == (
        "pull: 2.8 GiB/42.0 GiB (2.0 GiB reused), 85.0 MiB/s, ETA 7m52s, packages 0/12"
    )
    progress.finish()
    assert describe(progress.view()) == "pull: 2.8 GiB/42.0 GiB (2.0 GiB reused), packages 0/12"


def test_no_artifact_outside_a_flow_run() -> None:
    from flows.progress import ArtifactFeed

    feed = ArtifactFeed(Progress("upload")).start()
    assert feed.artifact_id is None
    feed.stop(whole=True)  # nothing to join, nothing raised


# -- completed runs end at 100 -------------------------------------------------------------------
def test_a_pull_with_upload_ends_at_100_and_its_upload_has_its_own_artifact(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    from flows.pull import mirror_pull
    from tasks.models import PullParameters

    params = PullParameters(
        bundle_dir=str(tmp_path / "bundle"),
        source=f"{registry.host}/deckhouse/ee",
        insecure=True,
        include_packages=["code"],
        upload={"url": f"oci://{registry.host}/airgap/progress:v1", "insecure": True},
    )
    state = mirror_pull(params, return_state=True)
    assert state.is_completed(), state
    run = _run_id(state)
    value, description = _value(run, "pull-progress")
    assert value == 100.0
    assert description.startswith("pull: ")
    assert _progress_artifacts(run, "upload-progress") == []  # the subflow's, not the pull's

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        [upload] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run])
            )
        )
    assert upload.state is not None and upload.state.is_completed()
    assert _value(upload.id, "upload-progress")[0] == 100.0


def test_a_push_ends_at_100(registry2: RegistryServer, tmp_path: Path) -> None:
    from flows.push import mirror_push
    from tasks.push import PushParameters

    bundle, _ = build_bundle(tmp_path, [PackageSpec("gauge")])
    target = f"{registry2.host}/progress-{uuid4().hex[:8]}/ee"
    state = mirror_push(
        PushParameters(bundle_dir=str(bundle), registry=target, insecure=True), return_state=True
    )
    assert state.is_completed(), state
    value, description = _value(_run_id(state), "push-progress")
    assert value == 100.0
    assert description.startswith("push: ")


def test_an_upload_and_a_download_end_at_100(registry: RegistryServer, tmp_path: Path) -> None:
    from flows.transfer import download_bundle, upload_bundle
    from tasks.transfer_models import DownloadParameters, UploadParameters

    bundle = make_bundle(tmp_path / "src", big=1 << 20)
    common = {"url": f"oci://{registry.host}/airgap/progress-transfer:v1", "insecure": True}
    up = upload_bundle(UploadParameters(bundle_dir=str(bundle), **common), return_state=True)
    assert up.is_completed(), up
    down = download_bundle(
        DownloadParameters(dest_dir=str(tmp_path / "dst"), **common), return_state=True
    )
    assert down.is_completed(), down
    assert _value(_run_id(up), "upload-progress")[0] == 100.0
    assert _value(_run_id(down), "download-progress")[0] == 100.0
