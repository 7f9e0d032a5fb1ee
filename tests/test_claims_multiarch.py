"""README claim: "An index is stored as its linux/amd64 image, as the reference does (R-6.3)".

The seeded index lists its arm64 child FIRST, so taking the first child, or keeping the index
itself, stores another digest than the one asserted here. Checked in the bundle and in the
target registry after a push.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from d8mirror.hashing import sha256_bytes_digest
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG, OCI_INDEX
from testbed.images import canonical_json
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = "claims/multiarch"
PACKAGE = "arches"


def _reorder_index(registry: RegistryServer, repo: str, tag: str) -> dict[str, str]:
    """Re-tag ``repo:tag`` as an index listing arm64 before amd64; platform -> child digest."""
    with registry.client() as client:
        index = client.get_manifest(repo, tag).json()
        children = {m["platform"]["architecture"]: m for m in index["manifests"]}
        assert set(children) == {"amd64", "arm64"}
        reordered = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [children["arm64"], children["amd64"]],
        }
        client.put_manifest(repo, tag, canonical_json(reordered), OCI_INDEX)
    return {arch: str(child["digest"]) for arch, child in children.items()} | {
        "index": sha256_bytes_digest(canonical_json(reordered))
    }


@pytest.fixture(scope="module")
def seeded(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    spec = SeedSpec(
        payload_size=8 << 10,
        packages=(
            PackageSpec(
                PACKAGE,
                ("v1.0.0",),
                channels={"stable": "v1.0.0"},
                internal_images=0,
                manifest_format="index",
            ),
        ),
    )
    with registry.client() as client:
        seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("multiarch-images"))
    digests = _reorder_index(registry, f"{ROOT}/packages/{PACKAGE}", "v1.0.0")
    assert len(set(digests.values())) == 3  # amd64, arm64 and the index all differ
    return digests


def _short_tags(tar_path: Path, layout: str) -> dict[str, str]:
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(f"{layout}/index.json")
        assert member is not None
        index: dict[str, Any] = json.load(member)
    return {m["annotations"][ANNOTATION_SHORT_TAG]: m["digest"] for m in index["manifests"]}


def test_index_is_stored_and_pushed_as_its_linux_amd64_image(
    registry: RegistryServer, registry2: RegistryServer, seeded: dict[str, str], tmp_path: Path
) -> None:
    from flows.pull import run_pull
    from flows.push import run_push
    from tasks.models import PullParameters
    from tasks.push import PushParameters

    bundle = tmp_path / "bundle"
    report = run_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/{ROOT}",
            insecure=True,
            include_packages=[PACKAGE],
        )
    )
    assert report.status == "completed"
    stored = _short_tags(bundle / f"package-{PACKAGE}.tar", f"packages/{PACKAGE}")
    assert stored["v1.0.0"] == seeded["amd64"]

    run_push(
        PushParameters(
            bundle_dir=str(bundle), registry=f"{registry2.host}/multiarch/ee", insecure=True
        )
    )
    with registry2.client() as client:
        pushed = client.head_manifest(f"multiarch/ee/packages/{PACKAGE}", "v1.0.0")
    assert pushed.digest == seeded["amd64"]
