"""Archives kept by content in the working dir and linked into other bundle dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from d8mirror.bundle import TarSource, pack_archive, verify_sidecars
from d8mirror.pull.archive_cache import ArchiveCache
from d8mirror.pull.packing import ArchiveInfo


def _pack(source: Path, bundle: Path, chunk_size: int = 0) -> ArchiveInfo:
    return ArchiveInfo.of(
        pack_archive(
            bundle / "package-a.tar", [TarSource(source, "packages/a")], chunk_size=chunk_size
        )
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "blobs" / "sha256" / "x").write_bytes(os.urandom(300_000))
    (root / "index.json").write_text("{}")
    return root


def test_restore_links_the_archive_and_its_sidecar(source: Path, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path / "work" / "archives")
    archive = _pack(source, tmp_path / "b1")
    assert cache.store("a", "k1", archive)
    restored = cache.restore("a", "k1", tmp_path / "b2", gost=False)
    assert restored == archive.model_copy(
        update={
            "path": str(tmp_path / "b2" / "package-a.tar"),
            "files": [str(tmp_path / "b2" / "package-a.tar")],
        }
    )
    for name in ("package-a.tar", "package-a.tar.sha256"):
        assert (tmp_path / "b2" / name).stat().st_ino == (tmp_path / "b1" / name).stat().st_ino
    assert verify_sidecars(tmp_path / "b2") == []


def test_other_keys_and_changed_files_are_not_used(source: Path, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path / "archives")
    archive = _pack(source, tmp_path / "b1")
    cache.store("a", "k1", archive)
    assert cache.restore("a", "k2", tmp_path / "b2", gost=False) is None
    with open(tmp_path / "b1" / "package-a.tar", "ab") as handle:  # same inode as the cache
        handle.write(b"\0" * 512)
    assert cache.restore("a", "k1", tmp_path / "b2", gost=False) is None
    assert not (tmp_path / "b2").exists() or list((tmp_path / "b2").iterdir()) == []


def test_only_the_newest_key_of_a_package_is_kept(source: Path, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path / "archives")
    cache.store("a", "k1", _pack(source, tmp_path / "b1"))
    cache.store("a", "k2", _pack(source, tmp_path / "b2"))
    assert sorted(p.name for p in (tmp_path / "archives" / "a").iterdir()) == ["k2"]


def test_chunks_replace_an_older_plain_archive(source: Path, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path / "archives")
    chunked = _pack(source, tmp_path / "b1", chunk_size=100_000)
    assert len(chunked.files) > 1
    cache.store("a", "k1", chunked)
    _pack(source, tmp_path / "b2")  # an older, unchunked pack sits in the target
    restored = cache.restore("a", "k1", tmp_path / "b2", gost=False)
    assert restored is not None and len(restored.files) == len(chunked.files)
    assert not (tmp_path / "b2" / "package-a.tar").exists()
    assert verify_sidecars(tmp_path / "b2") == []


def test_nothing_is_cached_across_filesystems(source: Path, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) to refuse hard links")
    work = shm / f"d8mirror-test-{os.getpid()}"
    try:
        cache = ArchiveCache(work / "archives")
        assert not cache.store("a", "k1", _pack(source, tmp_path / "b1"))
        assert cache.restore("a", "k1", tmp_path / "b2", gost=False) is None
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
