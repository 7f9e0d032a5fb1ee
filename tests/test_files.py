"""d8mirror.files: atomic writes and links, resumable partial files."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from d8mirror.errors import BundleError
from d8mirror.files import PartialFile, link_atomic, partial_path, write_atomic, write_text_atomic


def test_write_atomic_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "f.tmp").symlink_to(victim)
    write_atomic(tmp_path / "f", b"new")
    assert victim.read_text() == "precious"
    assert (tmp_path / "f").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.tmp", "victim"]


def test_write_text_atomic_failure_is_typed_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write"):
        write_text_atomic(tmp_path / "missing-dir" / "f", "x")
    assert list(tmp_path.iterdir()) == []


def test_link_atomic_replaces_the_final_name(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_bytes(b"a")
    dest.write_bytes(b"old")
    link_atomic(src, dest)
    assert dest.read_bytes() == b"a" and dest.stat().st_ino == src.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]


def test_partial_file_resumes_and_commits(tmp_path: Path) -> None:
    final = tmp_path / "blob"
    partial_path(final).write_bytes(b"hello ")
    partial = PartialFile.beside(final)
    assert partial.length == 6
    partial.append(b"world")
    assert partial.hex == hashlib.sha256(b"hello world").hexdigest()
    assert partial.digest == "sha256:" + partial.hex
    partial.commit(final)
    assert final.read_bytes() == b"hello world" and not partial_path(final).exists()


def test_partial_file_longer_than_expected_starts_over(tmp_path: Path) -> None:
    final = tmp_path / "blob"
    partial_path(final).write_bytes(b"too long")
    partial = PartialFile.beside(final)
    partial.fit(3)
    assert partial.length == 0
    partial.close_keeping_progress()  # nothing kept: the empty file is gone
    assert not partial_path(final).exists()
