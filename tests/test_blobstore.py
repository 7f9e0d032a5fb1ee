"""The content-addressed blob store: commit, verify on reuse, corruption, concurrent writers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from d8mirror.blobstore import BlobStore
from d8mirror.errors import DigestMismatchError, IntegrityError, InvalidReferenceError, LayoutError
from d8mirror.hashing import sha256_bytes_digest


def digest_of(data: bytes) -> str:
    return sha256_bytes_digest(data)


def stage(store: BlobStore, data: bytes) -> tuple[str, Path]:
    digest = digest_of(data)
    staged = store.staging_path(digest)
    staged.write_bytes(data)
    return digest, staged


def test_commit_verifies_and_places_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    digest, staged = stage(store, b"layer bytes")
    final = store.commit(digest, staged)
    assert final == store.path(digest) == tmp_path / "store" / "sha256" / digest[7:]
    assert final.read_bytes() == b"layer bytes"
    assert not staged.exists()
    assert store.has(digest) and store.has(digest, size=11) and not store.has(digest, size=3)
    assert store.verified(digest)


def test_commit_of_wrong_content_is_refused_and_staged_file_removed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    expected = digest_of(b"expected")
    staged = store.staging_path(expected)
    staged.write_bytes(b"something else")
    with pytest.raises(DigestMismatchError) as info:
        store.commit(expected, staged)
    assert info.value.expected == expected
    assert info.value.actual == digest_of(b"something else")
    assert not staged.exists()
    assert not store.has(expected)


def test_corrupt_blob_left_by_earlier_run_is_detected_and_deleted(tmp_path: Path) -> None:
    digest = digest_of(b"good")
    BlobStore(tmp_path).path(digest).write_bytes(b"bad!")  # an earlier, interrupted run
    store = BlobStore(tmp_path)
    assert store.has(digest)
    assert not store.verified(digest)
    assert not store.has(digest)


def test_verified_hashes_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = digest_of(b"reused")
    BlobStore(tmp_path).path(digest).write_bytes(b"reused")
    store = BlobStore(tmp_path)
    calls: list[Path] = []
    import d8mirror.blobstore as module
    from d8mirror.hashing import sha256_file_digest as real  # what blobstore imported

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(module, "sha256_file_digest", counting)
    assert all(store.verified(digest) for _ in range(5))
    assert len(calls) == 1


def test_missing_blob_is_not_verified(tmp_path: Path) -> None:
    assert not BlobStore(tmp_path).verified(digest_of(b"absent"))


def test_put_bytes_and_read_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b'{"schemaVersion": 2}')
    assert digest == digest_of(b'{"schemaVersion": 2}')
    assert store.put_bytes(b'{"schemaVersion": 2}') == digest
    assert store.read_bytes(digest, limit=100) == b'{"schemaVersion": 2}'
    with pytest.raises(IntegrityError, match="larger than 5 bytes"):
        store.read_bytes(digest, limit=5)
    with store.open(digest) as handle:
        assert handle.read() == b'{"schemaVersion": 2}'
    assert not list((tmp_path / "staging").iterdir())


def test_reading_an_absent_blob_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="not in the blob store"):
        BlobStore(tmp_path).read_bytes(digest_of(b"x"), limit=10)


def test_hostile_digest_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for bad in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64):
        with pytest.raises(InvalidReferenceError):
            store.path(bad)


def test_concurrent_writers_of_one_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"shared layer" * 1000
    digest = digest_of(data)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(trusted: bool) -> None:
        try:
            staged = store.staging_path(digest)
            staged.write_bytes(data)
            barrier.wait()
            store.commit(digest, staged, trusted=trusted)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.path(digest).read_bytes() == data
    assert not list((tmp_path / "staging").iterdir())  # losers' files discarded


def test_link_into_hardlinks_and_is_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    digest = store.put_bytes(b"config")
    dest = tmp_path / "layout" / "blobs" / "sha256" / digest[7:]
    store.link_into(digest, dest)
    assert dest.read_bytes() == b"config"
    assert dest.stat().st_ino == store.path(digest).stat().st_ino
    store.link_into(digest, dest)  # no-op
    dest.unlink()  # packing deletes layout files: the store keeps its copy
    assert store.verified(digest)


def test_link_into_replaces_a_short_leftover(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    digest = store.put_bytes(b"full content")
    dest = tmp_path / "blob"
    dest.write_bytes(b"half")
    store.link_into(digest, dest)
    assert dest.read_bytes() == b"full content"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_link_into_falls_back_to_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    store = BlobStore(tmp_path / "store")
    digest = store.put_bytes(b"copied")
    monkeypatch.setattr(os, "link", cross_device)
    dest = tmp_path / "other" / "blob"
    store.link_into(digest, dest)
    assert dest.read_bytes() == b"copied"
    assert dest.stat().st_ino != store.path(digest).stat().st_ino
