"""README claim: "Release-metadata, internal-digest and VEX problems are warnings in the report
(Q11)": the package is still pulled and packed, the run completes, the report names each one.

A package is seeded with unique content (its own seed), then one blob of each of its release
image ``version:v1.1.0``, its internal image of v1.1.0 and its VEX ``v1.0.0.att`` is removed
from the registry (a real 404 BLOB_UNKNOWN), so each of those pulls fails for good.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import httpx
import pytest

from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = "claims/warnings"
NAME = "warned"
REPO = f"{ROOT}/packages/{NAME}"


def _drop_last_layer(registry: RegistryServer, repo: str, reference: str) -> None:
    with registry.client() as client:
        layer = client.get_manifest(repo, reference).json()["layers"][-1]["digest"]
    httpx.delete(f"{registry.url}/v2/{repo}/blobs/{layer}").raise_for_status()


@pytest.fixture(scope="module")
def broken(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    spec = SeedSpec(
        seed=1414,
        payload_size=8 << 10,
        packages=(
            PackageSpec(
                NAME,
                ("v1.0.0", "v1.1.0"),
                channels={"stable": "v1.0.0"},
                internal_images=2,
                vex_versions=("v1.0.0",),
            ),
        ),
    )
    with registry.client() as client:
        content = seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("warned-images"))
    internal = content.internal_digests[NAME][-1]  # image-1 of v1.1.0: its own content
    _drop_last_layer(registry, f"{REPO}/version", "v1.1.0")
    _drop_last_layer(registry, REPO, internal)
    _drop_last_layer(registry, REPO, "v1.0.0.att")
    return {"internal": internal, "v1.1.0": content.digest(f"{REPO}:v1.1.0")}


def test_release_internal_and_vex_failures_are_warnings_not_failures(
    registry: RegistryServer, broken: dict[str, str], tmp_path: Path
) -> None:
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = tmp_path / "bundle"
    run_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/{ROOT}",
            insecure=True,
            include_packages=[f"{NAME}@>=1.0.0"],
        )
    )
    report = json.loads((bundle / "report.json").read_text())
    assert report["status"] == "completed" and report["failed"] == []
    package = next(p for p in report["packages"] if p["name"] == NAME)
    assert package["status"] == "pulled"
    assert sorted(package["versions"]) == ["v1.0.0", "v1.1.0"]
    warnings = "\n".join(package["warnings"] + report["warnings"])
    assert f"{REPO}/version:v1.1.0" in warnings  # release metadata
    assert f"{REPO}@{broken['internal']}" in warnings  # internal image by digest
    assert f"{REPO}:v1.0.0.att" in warnings  # VEX
    with tarfile.open(bundle / f"package-{NAME}.tar") as tar:
        member = tar.extractfile(f"packages/{NAME}/index.json")
        assert member is not None
        tags = {
            m["annotations"][ANNOTATION_SHORT_TAG]: m["digest"]
            for m in json.load(member)["manifests"]
        }
    assert tags["v1.1.0"] == broken["v1.1.0"]  # the main images are there
    assert "v1.0.0.att" not in tags
