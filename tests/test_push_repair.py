"""A push repairs its target, through the mirror-push flow against a real registry: a blob
deleted under a tag that still resolves is uploaded again (12.15); tags deleted after a push
(or a reset target) are pushed again although the previous run succeeded (13); and a warm
re-push stays cheap: one HEAD per tag and per blob, no write but the write check's session."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from push_bundle_builder import PackageSpec, build_bundle, digest_or_none

from d8mirror.push import tinyimage
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")
_ns = itertools.count()
DISCOVERY = tinyimage.build(DISCOVERY_LABEL).digest


@pytest.fixture(autouse=True)
def _checks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIRROR_BYPASS_ACCESS_CHECKS", raising=False)


def _params(bundle: Path, target: str) -> Any:
    from tasks.push import PushParameters

    return PushParameters(bundle_dir=str(bundle), registry=target, insecure=True)


def _delete(server: RegistryServer, path: str) -> None:
    response = httpx.delete(f"{server.url}{path}")
    assert response.status_code == 202, (path, response.status_code, response.text)


def test_a_blob_deleted_under_a_correct_tag_is_uploaded_again(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push

    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    root = f"repair-blob-{next(_ns)}/ee"
    repo = f"{root}/packages/console"
    assert run_push(_params(bundle, f"{registry2.host}/{root}")).ok
    with registry2.client() as client:
        layer = client.get_manifest(repo, "v1.1.0").json()["layers"][-1]["digest"]
        _delete(registry2, f"/v2/{repo}/blobs/{layer}")
        assert not client.blob_exists(repo, layer)

        result = run_push(_params(bundle, f"{registry2.host}/{root}"))
        assert result.ok, result
        assert client.blob_exists(repo, layer)  # repaired
    console = next(r for r in result.layouts if r.layout == "packages/console")
    assert console.blobs_uploaded + console.blobs_mounted == 1
    assert console.manifests_put == 0  # the tags were right all along


def test_tags_deleted_after_a_successful_push_are_pushed_again(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push

    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    root = f"repair-tags-{next(_ns)}/ee"
    params = _params(bundle, f"{registry2.host}/{root}")
    assert run_push(params).ok
    # delete every manifest of the push (a target reset): each DELETE removes all its tags
    for (repo, _tag), digest in sorted(expected.tags.items()):
        if digest and digest_or_none(registry2, f"{root}/{repo}", _tag) is not None:
            _delete(registry2, f"/v2/{root}/{repo}/manifests/{digest}")
    _delete(registry2, f"/v2/{root}/packages/manifests/{DISCOVERY}")
    assert digest_or_none(registry2, f"{root}/packages/console", "v1.0.0") is None

    result = run_push(params)  # same bundle, same Prefect result storage
    assert result.ok, result.mismatches
    for (repo, tag), digest in expected.tags.items():
        assert digest_or_none(registry2, f"{root}/{repo}", tag) == (digest or DISCOVERY)


def test_a_warm_re_push_writes_nothing_and_heads_each_tag_and_blob_once(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push

    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    root = f"repair-warm-{next(_ns)}/ee"
    params = _params(bundle, f"{registry2.host}/{root}")
    assert run_push(params).ok
    registry2.clear_requests()
    result = run_push(params)
    assert result.ok
    requests = registry2.requests()
    methods = Counter(method for method, _, _ in requests)
    # the only writes: the write check's upload session, opened and cancelled
    writes = [(m, p) for m, p, _ in requests if m not in ("GET", "HEAD")]
    assert [m for m, _ in writes] == ["POST", "DELETE"], writes
    tags = len(expected.tags)  # layout tags + discovery tags
    blobs = sum(r.blobs_present for r in result.layouts)
    assert sum(r.blobs_uploaded + r.blobs_mounted for r in result.layouts) == 0
    blob_heads = sum(1 for m, p, _ in requests if m == "HEAD" and "/blobs/" in p)
    manifest_heads = sum(1 for m, p, _ in requests if m == "HEAD" and "/manifests/" in p)
    assert blob_heads == blobs
    assert manifest_heads == 2 * tags  # "is it there?" once, then the final verification
    assert methods["GET"] <= 2, requests  # at most the /v2/ ping of the clients
