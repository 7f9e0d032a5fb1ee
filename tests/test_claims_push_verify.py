"""README claim: push "finally checks that every pushed tag resolves to the bundle's digest".

The target is a real registry behind the fault proxy, which from the start answers the tag
lookups of two pushed tags as a lossy or stale registry would: one tag is missing, the other
resolves to another digest. The push must end failed and name both tags; a verifier that
always says "fine" lets this push succeed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request, Response
from push_bundle_builder import PackageSpec, build_bundle

from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")

WRONG = "sha256:" + "0" * 64
_ns = itertools.count()


def _summary_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["push-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, "no push-summary artifact"
    return str(found[0].data)


def test_a_tag_missing_or_wrong_after_the_push_fails_it_and_is_named(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import PushFailed, run_push
    from tasks.push import PushParameters

    root = f"verify-{next(_ns)}/ee"
    lost = f"/v2/{root}/packages/console/manifests/v1.0.0"
    stale = f"/v2/{root}/packages/console/version/manifests/stable"

    def lossy(request: Request) -> Response | None:
        if request.method not in ("HEAD", "GET"):
            return None
        if request.path == lost:
            return Response.error(404, "MANIFEST_UNKNOWN")
        if request.path == stale and request.method == "HEAD":
            return Response(
                200,
                [
                    ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                    ("Docker-Content-Digest", WRONG),
                    ("Content-Length", "321"),
                ],
                head_only=True,
            )
        return None

    bundle, expected = build_bundle(tmp_path, [PackageSpec("console")])
    with FaultProxy(registry2.host, intercept=lossy) as proxy:
        params = PushParameters(
            bundle_dir=str(bundle), registry=f"{proxy.host}/{root}", insecure=True
        )
        with pytest.raises(PushFailed):
            run_push(params)
        assert proxy.count("PUT", lost) >= 1  # it was pushed, then looked lost
    summary = _summary_artifact()  # what the user reads in the Prefect UI
    assert f"{root}/packages/console:v1.0.0" in summary and "missing" in summary
    assert f"{root}/packages/console/version:stable" in summary and WRONG in summary
    # the registry itself holds the right digests: only the verification saw otherwise
    with registry2.client() as client:
        assert (
            client.head_manifest(f"{root}/packages/console", "v1.0.0").digest
            == expected.tags[("packages/console", "v1.0.0")]
        )
