"""The mirror-push Prefect flow end to end (real Prefect test server, real registries)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import PackageSpec, build_bundle, damage_member
from push_stages import given_credentials

from d8mirror.errors import NotFoundError
from d8mirror.registry import Credentials

_ns = itertools.count()


@pytest.fixture(scope="module")
def prefect_harness(prefect_server: None) -> None:
    """The session's Prefect test server (root conftest)."""


def test_flow_pushes_then_a_rerun_repushes_only_the_failed_layout(
    prefect_harness: None, basic_registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.push import PushFailed, run_push
    from tasks.push import PushParameters

    monkeypatch.delenv("MIRROR_BYPASS_ACCESS_CHECKS", raising=False)
    bundle, expected = build_bundle(
        tmp_path, [PackageSpec("console"), PackageSpec("viewer", extras={"flow": "1.0"})]
    )
    # break viewer's extra image (its own name: no other test put its blob into the shared
    # target): damage its single layer blob in the archive
    index = (tmp_path / "work/viewer/extra/flow/index.json").read_text()
    import json

    manifest_digest = json.loads(index)["manifests"][0]["digest"]
    manifest = json.loads(
        (tmp_path / "work/viewer/extra/flow/blobs/sha256" / manifest_digest[7:]).read_text()
    )
    layer_hex = manifest["layers"][0]["digest"][7:]
    broken = tmp_path / "broken"
    broken.mkdir()
    for archive in bundle.iterdir():
        if archive.name.endswith(".tar"):
            damage_member(archive, broken / archive.name, layer_hex)
    target = f"{basic_registry.host}/flow-{next(_ns)}/ee"
    params = PushParameters(bundle_dir=str(broken), registry=target, insecure=True, concurrency=2)
    creds = Credentials(basic_registry.username, basic_registry.password)
    with (
        given_credentials(basic_registry.host, creds),
        pytest.raises(PushFailed, match="packages/viewer/extra/flow"),
    ):
        run_push(params)
    assert not (broken / ".tmp").exists()  # the unified tree and its parents are gone

    basic_registry.clear_requests()
    with given_credentials(basic_registry.host, creds):
        result = run_push(params.model_copy(update={"bundle_dir": str(bundle)}))
    assert result.ok
    # layouts pushed by the first run are found complete in the target (HEADs): the only
    # writes of the rerun are the write check's upload session (opened and cancelled at the
    # root), the repaired layout and the discovery tag the first run withheld for viewer
    root = target.split("/", 1)[1]
    writes = {
        p.split("/blobs/")[0].split("/manifests/")[0]
        for m, p, _ in basic_registry.requests()
        if m in ("PUT", "PATCH", "POST")
    }
    assert writes == {
        f"/v2/{root}",
        f"/v2/{root}/packages/viewer/extra/flow",
        f"/v2/{root}/packages",
    }
    with basic_registry.client() as client:
        root = target.split("/", 1)[1]
        for (repo, tag), digest in expected.tags.items():
            if digest:
                assert client.head_manifest(f"{root}/{repo}", tag).digest == digest
        with pytest.raises(NotFoundError):  # the write check leaves no image behind
            client.head_manifest(root, "d8WriteCheck")
