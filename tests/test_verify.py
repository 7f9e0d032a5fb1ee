"""verify_bundle: sidecars, blobs inside archives, short tags, references, transfer manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from push_bundle_builder import (
    Expected,
    PackageSpec,
    build_bundle,
    build_package_layouts,
    pack_package,
)

from d8mirror.errors import ConfigError
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from d8mirror.transfer.manifest import build_manifest, write_local_manifest
from d8mirror.verify import verify_bundle


def _one_package(tmp_path: Path, *, chunk_size: int = 0, edit: object = None) -> Path:
    root = build_package_layouts(
        tmp_path / "work", PackageSpec("alpha", layer_size=20000), Expected()
    )
    if callable(edit):
        edit(root)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pack_package(bundle, root, "alpha", chunk_size=chunk_size)
    return bundle


def test_intact_bundle_passes(tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("alpha"), PackageSpec("beta")], with_index=True)
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()
    assert report.archives == 3
    assert report.blobs > 10
    assert report.descriptors >= 10
    assert report.verdict().startswith("OK: ")


def test_intact_chunked_bundle_passes(tmp_path: Path) -> None:
    bundle = _one_package(tmp_path, chunk_size=8192)
    assert len(list(bundle.glob("*.chunk"))) > 3
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()
    assert report.archives == 1
    assert report.files == len(list(bundle.glob("*.chunk")))


def test_flipped_byte_in_archive_is_caught(tmp_path: Path) -> None:
    bundle = _one_package(tmp_path)
    archive = bundle / "package-alpha.tar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    report = verify_bundle(bundle)
    assert not report.ok
    assert any("SHA-256 does not match" in p for p in report.problems)
    assert report.verdict().startswith("FAILED: ")


def test_missing_sidecar_is_caught(tmp_path: Path) -> None:
    bundle = _one_package(tmp_path, chunk_size=8192)
    (bundle / "package-alpha.tar.0001.chunk.sha256").unlink()
    report = verify_bundle(bundle)
    assert any("missing checksum file" in p for p in report.problems), report.problems


def test_missing_chunk_is_caught(tmp_path: Path) -> None:
    bundle = _one_package(tmp_path, chunk_size=8192)
    (bundle / "package-alpha.tar.0002.chunk").unlink()
    report = verify_bundle(bundle)
    assert any("package-alpha.tar.0002.chunk: missing" in p for p in report.problems)
    assert any("chunk package-alpha.tar.0002.chunk is missing" in p for p in report.problems), (
        report.problems
    )


def test_blob_not_matching_its_name_inside_tar(tmp_path: Path) -> None:
    def corrupt(root: Path) -> None:
        blob = max((root / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        data = bytearray(blob.read_bytes())
        data[100] ^= 0xFF
        blob.write_bytes(bytes(data))

    bundle = _one_package(tmp_path, edit=corrupt)
    report = verify_bundle(bundle)
    assert [p for p in report.problems if "does not match its name" in p], report.problems
    assert len(report.problems) == 1  # the sidecars are right: the tar was packed that way


def test_manifest_without_short_tag(tmp_path: Path) -> None:
    def strip(root: Path) -> None:
        index = root / "version" / "index.json"
        doc = json.loads(index.read_text())
        del doc["manifests"][0]["annotations"][ANNOTATION_SHORT_TAG]
        index.write_text(json.dumps(doc))

    report = verify_bundle(_one_package(tmp_path, edit=strip))
    assert len(report.problems) == 1
    assert "packages/alpha/version/index.json: descriptor #0" in report.problems[0]
    assert ANNOTATION_SHORT_TAG in report.problems[0]


def test_missing_referenced_blob(tmp_path: Path) -> None:
    def drop(root: Path) -> None:
        extra = next((root / "extra").iterdir())
        blob = max((extra / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        blob.unlink()

    report = verify_bundle(_one_package(tmp_path, edit=drop))
    assert len(report.problems) == 1
    assert "is missing from packages/alpha/extra/" in report.problems[0]


def test_transfer_manifest_lists_missing_file(tmp_path: Path) -> None:
    bundle = _one_package(tmp_path)
    write_local_manifest(bundle, build_manifest(bundle))
    assert verify_bundle(bundle).ok
    (bundle / "package-alpha.tar").rename(tmp_path / "elsewhere.tar")
    report = verify_bundle(bundle)
    assert any("listed in d8mirror-transfer.json but missing" in p for p in report.problems)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        verify_bundle(tmp_path / "nope")
