"""Seeded content has the Deckhouse shape (R-1), seen by our client and by skopeo."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from d8mirror.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from d8mirror.registry import RegistryClient
from testbed.images import FileContent, ImageBuilder, RandomFile
from testbed.registry_server import RegistryServer
from testbed.seed import ExtraSpec, PackageSpec, SeededContent, SeedSpec, seed_packages

ROOT = "deckhouse/ee"
PKG = f"{ROOT}/packages"


def _files_of(client: RegistryClient, repo: str, ref: str, tmp_path: Path) -> dict[str, bytes]:
    """Small files of the image's flattened filesystem (top layer wins)."""
    manifest = client.get_manifest(repo, ref).json()
    files: dict[str, bytes] = {}
    for index, layer in enumerate(manifest["layers"]):
        dest = tmp_path / f"layer-{index}"
        client.fetch_blob(repo, layer["digest"], dest)
        with tarfile.open(dest) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[member.name] = extracted.read() if member.size < 1 << 16 else b""
    return files


def test_catalog_and_package_tags(registry: RegistryServer, demo_content: SeededContent) -> None:
    with registry.client() as client:
        assert sorted(client.list_tags(PKG)) == ["code", "console", "stronghold"]
        console = sorted(client.list_tags(f"{PKG}/console"))
        channels = sorted(client.list_tags(f"{PKG}/code/version"))
    assert console == demo_content.tags(f"{PKG}/console")
    assert {"v1.0.0", "v1.2.0", "v1.1.0.att", "v1.2.3.att"} <= set(console)
    assert sum(tag.startswith("sha256-") and tag.endswith(".att") for tag in console) == len(
        demo_content.internal_digests["console"]
    )
    assert "lts" in channels and "v1.6.2" in channels


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_sees_the_same_tags(registry: RegistryServer, demo_content: SeededContent) -> None:
    for repo in (PKG, f"{PKG}/console", f"{PKG}/console/extra/enforcer"):
        out = subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/{repo}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert sorted(json.loads(out)["Tags"]) == demo_content.tags(repo)


def test_main_image_carries_metadata(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    with registry.client() as client:
        files = _files_of(client, f"{PKG}/console", "v1.1.0", tmp_path)
        assert json.loads(files["extra_images.json"]) == {"scanner": "v1.2.3", "enforcer": 3}
        digests = json.loads(files["images_digests.json"])["internal"]
        for digest in digests.values():
            assert client.get_manifest(f"{PKG}/console", digest).digest == digest
            assert f"{PKG}/console@{digest}" in demo_content.refs
        assert {"base/payload.bin", "payload/console.bin"} <= set(files)
        channel = _files_of(client, f"{PKG}/console/version", "stable", tmp_path)
        assert json.loads(channel["version.json"]) == {"version": "v1.1.0"}
        assert client.get_manifest(
            f"{PKG}/console/extra/enforcer", "3"
        ).digest == demo_content.digest(f"{PKG}/console/extra/enforcer:3")


def test_base_layer_is_shared_and_formats_differ(
    registry: RegistryServer, demo_content: SeededContent
) -> None:
    with registry.client() as client:
        console = client.get_manifest(f"{PKG}/console", "v1.0.0")
        code = client.get_manifest(f"{PKG}/code", "v1.6.0")
        stronghold = client.get_manifest(f"{PKG}/stronghold", "v0.4.0")
    assert console.media_type == OCI_MANIFEST
    assert code.media_type == DOCKER_MANIFEST
    assert stronghold.media_type == OCI_INDEX
    assert len(stronghold.json()["manifests"]) == 2
    assert console.json()["layers"][0]["digest"] == code.json()["layers"][0]["digest"]
    assert console.digest == demo_content.digest(f"{PKG}/console:v1.0.0")


def test_identical_spec_gives_identical_digests(
    tmp_path: Path, demo_content: SeededContent
) -> None:
    spec = SeedSpec(
        packages=(
            PackageSpec(
                "solo",
                ("v1.0.0", "v2.0.0"),
                {"stable": "v1.0.0"},
                extras=(ExtraSpec("tool", 7),),
                vex_versions=("v2.0.0",),
                vex_internal=True,
                vex_extras=("tool",),
            ),
        ),
        payload_size=40_000,
    )
    results = []
    for attempt in range(2):
        with RegistryServer(tmp_path / f"reg-{attempt}") as server, server.client() as client:
            results.append(seed_packages(client, ROOT, spec, tmp_path / f"work-{attempt}"))
    assert results[0].refs == results[1].refs
    assert f"{PKG}/solo:7.att" in results[0].refs
    assert f"{PKG}/solo/extra/tool:7" in results[0].refs


def test_layers_are_deterministic_and_streamed(tmp_path: Path) -> None:
    files: dict[str, FileContent] = {
        "a/b.txt": b"hello",
        "big.bin": RandomFile(3 << 20 | 5, seed="x"),
    }
    one = ImageBuilder(tmp_path / "one").image([files])
    two = ImageBuilder(tmp_path / "two").image([files])
    assert one.digest == two.digest
    layer = one.blobs[1]
    with gzip.open(layer.path) as gz:
        header = gz.read(512)
    assert header.startswith(b"a")  # parent directories first, sorted
    with tarfile.open(layer.path) as tar:
        big = tar.getmember("big.bin")
        assert big.size == 3 << 20 | 5 and big.mtime == tar.getmember("a/b.txt").mtime
        extracted = tar.extractfile(big)
        assert extracted is not None
        assert len(extracted.read()) == big.size
    assert io.BytesIO(layer.path.read_bytes()[:2]).read() == b"\x1f\x8b"
