"""write_tar: deterministic, streamed, GNU long names, regular files only."""

from __future__ import annotations

import io
import os
import random
import re
import tarfile
from pathlib import Path

import pytest

from d8mirror.bundle import TarMember, TarSource, write_tar
from d8mirror.errors import BundleError


def make_tree(root: Path, seed: int = 1, count: int = 20) -> dict[str, bytes]:
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        rel = f"d{i % 3}/sub{i % 2}/f{i}.bin"
        data = rng.randbytes(rng.randrange(0, 70_000))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def read_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for member in tar:
            assert member.isreg()
            extracted = tar.extractfile(member)
            assert extracted is not None
            out[member.name] = extracted.read()
        return out


def test_round_trip_reproduces_every_file(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    buffer = io.BytesIO()
    written = write_tar(buffer, [TarSource(tmp_path / "src", "packages/console")])
    assert written == len(buffer.getvalue())
    assert read_tar(buffer.getvalue()) == {f"packages/console/{k}": v for k, v in files.items()}


def test_members_are_sorted_with_fixed_metadata_and_no_directories(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    buffer = io.BytesIO()
    write_tar(buffer, [TarSource(tmp_path / "src", "p")])
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    for member in members:
        assert member.type == tarfile.REGTYPE
        assert (member.mode, member.mtime, member.uid, member.gid) == (0o644, 0, 0, 0)
        assert (member.uname, member.gname) == ("", "")


def test_identical_input_gives_byte_identical_tar(tmp_path: Path) -> None:
    make_tree(tmp_path / "a", seed=7)
    make_tree(tmp_path / "b", seed=7)
    os.utime(tmp_path / "b" / "d0/sub0/f0.bin", (1, 1))
    first, second = io.BytesIO(), io.BytesIO()
    write_tar(first, [TarSource(tmp_path / "a", "x")])
    write_tar(second, [TarSource(tmp_path / "b", "x")])
    assert first.getvalue() == second.getvalue()


def test_gnu_long_names(tmp_path: Path) -> None:
    deep = tmp_path / "src" / ("d" * 120) / ("f" * 150)
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"long")
    buffer = io.BytesIO()
    write_tar(buffer, [TarSource(tmp_path / "src", "packages/console/extra/scanner")])
    assert b"././@LongLink" in buffer.getvalue()
    name = f"packages/console/extra/scanner/{'d' * 120}/{'f' * 150}"
    assert read_tar(buffer.getvalue()) == {name: b"long"}


def test_sources_and_members_are_merged_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.json").write_text("{}")
    (tmp_path / "blob").write_bytes(b"blob")
    buffer = io.BytesIO()
    write_tar(
        buffer,
        [TarSource(tmp_path / "src", "p"), TarMember("p/blobs/sha256/ab", tmp_path / "blob")],
    )
    assert list(read_tar(buffer.getvalue())) == ["p/blobs/sha256/ab", "p/index.json"]


def test_duplicate_arcname_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.json").write_text("{}")
    (tmp_path / "other").write_text("{}")
    with pytest.raises(BundleError, match=r"duplicate archive entry 'p/index\.json'"):
        write_tar(
            io.BytesIO(),
            [TarSource(tmp_path / "src", "p"), TarMember("p/index.json", tmp_path / "other")],
        )


@pytest.mark.parametrize("kind", ["symlink", "dirlink", "fifo"])
def test_special_files_in_a_source_are_named(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    odd = src / "odd"
    if kind == "symlink":
        odd.symlink_to(tmp_path)
    elif kind == "dirlink":
        odd.symlink_to(tmp_path, target_is_directory=True)
    else:
        os.mkfifo(odd)
    with pytest.raises(BundleError, match=re.escape(str(odd))):
        write_tar(io.BytesIO(), [TarSource(src, "p")])


def test_file_data_is_streamed_in_pieces(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    sizes: list[int] = []

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            sizes.append(len(data))
            return len(data)

    write_tar(Sink(), [TarMember("big", big)])  # type: ignore[arg-type]
    assert max(sizes) <= 1024 * 1024
