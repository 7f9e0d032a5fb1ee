"""safe_unpack: round trip, chunk sets, tar-slip and special entries refused, index collisions."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from d8mirror.bundle import TarSource, pack_archive, safe_unpack
from d8mirror.errors import BundleError, UnsafeArchiveEntryError


def no_collision(existing: Path, incoming: Path) -> None:
    raise AssertionError(f"unexpected index collision {existing} {incoming}")


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("chunk_size", [0, 3 * 1024 * 1024])
def test_pack_unpack_round_trip(tmp_path: Path, chunk_size: int) -> None:
    src = tmp_path / "src"
    for i in range(3):
        path = src / "blobs" / "sha256" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(3 * 1024 * 1024 + i))
    (src / "index.json").write_text('{"manifests": []}')
    pack_archive(tmp_path / "b" / "p.tar", [TarSource(src, "packages/p")], chunk_size=chunk_size)
    names = safe_unpack(tmp_path / "b" / "p.tar", tmp_path / "out", on_index_collision=no_collision)
    assert names == sorted(names) and len(names) == 4
    assert tree(tmp_path / "out" / "packages" / "p") == tree(src)


def hostile_tar(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info.size = len(data) if info.isreg() else 0
        tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


HOSTILE = {
    "dotdot": entry("../escaped.txt"),
    "nested-dotdot": entry("a/../../escaped.txt"),
    "absolute": entry("/tmp/escaped-d8mirror-test.txt"),
    "symlink": entry("link", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink": entry("hard", tarfile.LNKTYPE, "/etc/passwd"),
    "chardev": entry("dev", tarfile.CHRTYPE),
    "blockdev": entry("blk", tarfile.BLKTYPE),
    "fifo": entry("fifo", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_refused(tmp_path: Path, case: str) -> None:
    info = HOSTILE[case]
    archive = hostile_tar(tmp_path / "evil.tar", info, b"pwned")
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafeArchiveEntryError) as caught:
        safe_unpack(archive, dest, on_index_collision=no_collision)
    assert str(archive) in str(caught.value) and repr(info.name) in str(caught.value)
    assert not (tmp_path / "work" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/escaped-d8mirror-test.txt").exists()
    assert sorted(p.name for p in dest.rglob("*")) == ["fine.txt"]


def test_symlinked_directory_in_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "layout").symlink_to(outside, target_is_directory=True)
    archive = hostile_tar(tmp_path / "x.tar", entry("layout/blob"), b"data")
    with pytest.raises(UnsafeArchiveEntryError, match="layout/blob"):
        safe_unpack(archive, dest, on_index_collision=no_collision)
    assert list(outside.iterdir()) == []


def test_directory_entries_are_ignored_and_dot_prefix_normalised(tmp_path: Path) -> None:
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(entry("./dir", tarfile.DIRTYPE))
        info = entry("./dir/file")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    assert safe_unpack(archive, tmp_path / "d", on_index_collision=no_collision) == ["dir/file"]
    assert (tmp_path / "d" / "dir" / "file").read_bytes() == b"1"


def test_index_collision_hands_both_paths_and_removes_the_temp(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    layout = dest / "packages" / "p" / "version"
    layout.mkdir(parents=True)
    (layout / "index.json").write_text("old")
    (layout / "blob").write_text("old blob")
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.json").write_text("new")
    (src / "blob").write_text("new blob")
    pack_archive(tmp_path / "x.tar", [TarSource(src, "packages/p/version")])
    calls: list[tuple[Path, Path, str]] = []

    def merge(existing: Path, incoming: Path) -> None:
        calls.append((existing, incoming, incoming.read_text()))

    safe_unpack(tmp_path / "x.tar", dest, on_index_collision=merge)
    assert len(calls) == 1
    existing, incoming, text = calls[0]
    assert existing == (layout / "index.json").resolve() and text == "new"
    assert incoming.parent == existing.parent and not incoming.exists()
    assert (layout / "index.json").read_text() == "old"
    assert (layout / "blob").read_text() == "new blob"
    assert sorted(p.name for p in layout.iterdir()) == ["blob", "index.json"]


def test_truncated_archive_is_a_bundle_error_without_partial_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(200_000))
    result = pack_archive(tmp_path / "x.tar", [TarSource(src, "p")])
    with result.path.open("r+b") as f:
        f.truncate(100_000)
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=re.escape(str(result.path))):
        safe_unpack(result.path, dest, on_index_collision=no_collision)
    assert [p for p in dest.rglob("*") if p.is_file()] == []


def test_missing_archive_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"nope\.tar"):
        safe_unpack(tmp_path / "nope.tar", tmp_path / "d", on_index_collision=no_collision)
