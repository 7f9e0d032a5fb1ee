"""The mirror-push Prefect flow end to end (real Prefect test server, real registries)."""

from __future__ import annotations

import itertools
import tarfile
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import PackageSpec, build_bundle

from d8mirror.registry import Credentials

_ns = itertools.count()


@pytest.fixture(scope="module")
def prefect_harness(prefect_server: None) -> None:
    """The session's Prefect test server (root conftest)."""


def _drop_member(src: Path, dst: Path, suffix: str) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            if not member.name.endswith(suffix):
                tout.addfile(member, tin.extractfile(member))


def _push_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-push"]))))


def _layout_task_states(flow_run_id: Any, count: int, timeout: float = 60) -> dict[str, str]:
    """push-layout task run name -> final state name, for one flow run (the server records
    task runs from events, a moment after the flow returns: wait for all ``count``)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = {r.name: r.state.name for r in runs
                      if r.name.startswith("push-packages/") and r.state is not None
                      and r.state.is_final()}
            if len(states) >= count or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def test_flow_pushes_then_a_rerun_repushes_only_the_failed_layout(
        prefect_harness: None, basic_registry: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.push import PushFailed, run_push
    from tasks.push import PushParameters

    monkeypatch.delenv("MIRROR_BYPASS_ACCESS_CHECKS", raising=False)
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    # break viewer's extra image: drop its single layer blob from the archive
    index = (tmp_path / "work/viewer/extra/scanner/index.json").read_text()
    import json

    manifest_digest = json.loads(index)["manifests"][0]["digest"]
    manifest = json.loads((tmp_path / "work/viewer/extra/scanner/blobs/sha256" /
                           manifest_digest[7:]).read_text())
    layer_hex = manifest["layers"][0]["digest"][7:]
    broken = tmp_path / "broken"
    broken.mkdir()
    for archive in bundle.iterdir():
        if archive.name.endswith(".tar"):
            _drop_member(archive, broken / archive.name, layer_hex)
    target = f"{basic_registry.host}/flow-{next(_ns)}/ee"
    params = PushParameters(bundle_dir=str(broken), registry=target, insecure=True,
                            concurrency=2)
    creds = Credentials(basic_registry.username, basic_registry.password)
    with pytest.raises(PushFailed, match="packages/viewer/extra/scanner"):
        run_push(params, creds)
    assert not (broken / ".tmp").exists()     # the unified tree and its parents are gone

    basic_registry.clear_requests()
    earlier = {r.id for r in _push_runs()}
    result = run_push(params.model_copy(update={"bundle_dir": str(bundle)}), creds)
    assert result["ok"]
    [rerun] = [r for r in _push_runs() if r.id not in earlier]
    states = _layout_task_states(rerun.id, len(result["layouts"]))
    repaired = "push-packages/viewer/extra/scanner"
    # the cache key (index.json + provenance + target) matched for every layout the first run
    # pushed: those task runs are Cached; only the repaired layout ran again
    assert states.pop(repaired) == "Completed"
    assert states and set(states.values()) == {"Cached"}, states
    # layouts pushed by the first run come back from the content cache: the only writes of
    # the rerun go to the repaired layout
    writes = {p.split("/blobs/")[0].split("/manifests/")[0]
              for m, p, _ in basic_registry.requests() if m in ("PUT", "PATCH", "POST")}
    assert writes == {f"/v2/{target.split('/', 1)[1]}/packages/viewer/extra/scanner"}
    with basic_registry.client() as client:
        root = target.split("/", 1)[1]
        for (repo, tag), digest in expected.tags.items():
            if digest:
                assert client.head_manifest(f"{root}/{repo}", tag).digest == digest
        assert client.head_manifest(root, "d8WriteCheck").media_type
