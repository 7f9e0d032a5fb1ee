"""bundle_id: the id a receipt records for each bundle a push applied (no registry needed)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from d8mirror.bundle import TarSource, pack_archive
from d8mirror.delta import Delta, OmittedBlob, bundle_id, push_bundle_id, write_delta
from d8mirror.errors import BundleError, SealedFileError
from d8mirror.hashing import sha256_bytes_hex


def _bundle(tmp: Path, name: str = "bundle", *, payload: bytes = b"hello") -> Path:
    src = tmp / f"src-{name}" / "console"
    src.mkdir(parents=True)
    (src / "index.json").write_bytes(payload)
    bundle = tmp / name
    bundle.mkdir()
    pack_archive(bundle / "package-console.tar", [TarSource(src, "packages/console")])
    pack_archive(bundle / "package-versions.tar", [TarSource(src, "packages/console/version")])
    return bundle


def _expected(bundle: Path) -> str:
    lines = sorted(
        f"{p.name} {p.with_name(p.name + '.sha256').read_text().split()[0]}"
        for p in bundle.glob("*.tar")
    )
    return "full-" + sha256_bytes_hex("".join(x + "\n" for x in lines).encode())[:16]


def test_full_bundle_id_is_derived_from_the_sidecars(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert bundle_id(bundle) == _expected(bundle)
    assert bundle_id(bundle).startswith("full-") and len(bundle_id(bundle)) == 21


def test_bundle_id_is_deterministic_and_follows_the_content(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(bundle, copy)
    assert bundle_id(copy) == bundle_id(bundle)  # another directory, same archives
    other = _bundle(tmp_path, "other", payload=b"changed")
    assert bundle_id(other) != bundle_id(bundle)


def test_an_archive_without_sidecar_is_hashed_to_the_same_id(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    want = bundle_id(bundle)
    for sidecar in bundle.glob("*.sha256"):
        sidecar.unlink()  # as d8 mirror writes bundles
    assert bundle_id(bundle) == want


def test_single_archives_and_files_give_the_id_of_what_was_given(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    archives = sorted(bundle.glob("*.tar"))
    assert push_bundle_id(bundle, archives) == bundle_id(bundle)
    one = push_bundle_id(archives[0], archives[:1])
    assert one.startswith("full-") and one != bundle_id(bundle)
    assert push_bundle_id(None, archives[:1]) == one  # --file gives the same id


def test_delta_bundle_id_is_the_delta_id(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    delta = Delta.build(
        "ab" * 32,
        [OmittedBlob("sha256:" + "c" * 64, 10, "packages/console")],
        now=datetime(2026, 12, 2, 17, 30, tzinfo=UTC),
    )
    write_delta(bundle, delta)
    assert bundle_id(bundle) == delta.id == "delta-20261202T173000Z-abababababab"
    assert push_bundle_id(bundle, sorted(bundle.glob("*.tar"))) == delta.id
    (bundle / "delta.json").write_text("{}")
    with pytest.raises(SealedFileError):
        bundle_id(bundle)


def test_a_broken_sidecar_or_an_empty_bundle_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    next(bundle.glob("*.tar.sha256")).write_text("not a digest\n")
    with pytest.raises(BundleError, match="sha256sum line"):
        bundle_id(bundle)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="no archive"):
        bundle_id(empty)


def test_without_hashing_a_bundle_without_sidecars_has_no_id(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    archives = sorted(bundle.glob("*.tar"))
    assert push_bundle_id(bundle, archives, hash_missing=False) == bundle_id(bundle)
    next(bundle.glob("*.tar.sha256")).unlink()
    assert push_bundle_id(bundle, archives, hash_missing=False) == ""
    assert push_bundle_id(bundle, archives) == bundle_id(bundle)
