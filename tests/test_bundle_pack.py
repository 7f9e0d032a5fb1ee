"""pack_archive: atomic placement, exact chunks, checksum sidecars, cleanup on every failure."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

import gostcrypto
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d8mirror.bundle import (
    PackCancelled,
    TarMember,
    TarSource,
    open_archive,
    pack_archive,
    tarwriter,
    verify_sidecars,
)
from d8mirror.errors import BundleError, ChunkSetError, DiskSpaceError

MiB = 1024 * 1024


def make_source(root: Path, sizes: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        (root / f"file{i}").write_bytes(os.urandom(size))
    return root


def read_archive(path: Path) -> bytes:
    with open_archive(path) as stream:
        return stream.read()


def test_unchunked_pack_places_tar_and_sha256_sidecar(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [1000, 2000])
    dest = tmp_path / "bundle" / "package-a.tar"
    result = pack_archive(dest, [TarSource(src, "packages/a")])
    data = dest.read_bytes()
    assert result.files == (dest,) and result.path == dest
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in dest.parent.iterdir()) == [
        "package-a.tar",
        "package-a.tar.sha256",
    ]
    assert (dest.parent / "package-a.tar.sha256").read_text() == (
        f"{result.sha256}  package-a.tar\n"
    )
    assert verify_sidecars(dest.parent) == []


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_sidecars_pass_sha256sum_check(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [300_000, 5])
    pack_archive(tmp_path / "b" / "x.tar", [TarSource(src, "x")], chunk_size=100_000)
    sidecars = sorted(p.name for p in (tmp_path / "b").glob("*.sha256"))
    assert len(sidecars) == 4
    subprocess.run(["sha256sum", "--quiet", "-c", *sidecars], cwd=tmp_path / "b", check=True)


def test_tmp_exists_during_write_and_is_gone_after(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [10, 10, 10])
    dest = tmp_path / "x.tar"
    seen: list[list[str]] = []

    def observe() -> bool:
        seen.append(sorted(p.name for p in tmp_path.iterdir() if p.is_file()))
        return False

    pack_archive(dest, [TarSource(src, "x")], should_cancel=observe)
    assert any("x.tar.tmp" in names and "x.tar" not in names for names in seen)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["x.tar", "x.tar.sha256"]


def test_stale_tmp_is_replaced_not_appended(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [500])
    dest = tmp_path / "x.tar"
    (tmp_path / "x.tar.tmp").write_bytes(b"garbage" * 1000)
    (tmp_path / "x.tar.0003.chunk.tmp").write_bytes(b"garbage")
    result = pack_archive(dest, [TarSource(src, "x")])
    assert dest.stat().st_size == result.size
    assert not list(tmp_path.glob("*.tmp"))


class Boom(Exception):
    pass


def failing_source(tmp_path: Path, exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source whose third file raises ``exc`` while being packed."""
    src = make_source(tmp_path / "src", [3 * MiB, 3 * MiB, 3 * MiB])
    real = tarwriter._add_member
    calls = 0

    def add_member(tar: object, member: TarMember) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise exc
        real(tar, member)  # type: ignore[arg-type]

    monkeypatch.setattr(tarwriter, "_add_member", add_member)
    return src


def bundle_files(bundle: Path) -> list[str]:
    return sorted(p.name for p in bundle.iterdir())


@pytest.mark.parametrize("exc", [Boom("source broke"), KeyboardInterrupt()])
@pytest.mark.parametrize("chunk_size", [0, MiB])
def test_failure_mid_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, chunk_size: int
) -> None:
    src = failing_source(tmp_path, exc, monkeypatch)
    bundle = tmp_path / "bundle"
    with pytest.raises(type(exc)):
        pack_archive(bundle / "x.tar", [TarSource(src, "x")], chunk_size=chunk_size, gost=False)
    assert bundle_files(bundle) == []


@pytest.mark.parametrize("chunk_size", [0, 100_000])
def test_cancel_leaves_nothing(tmp_path: Path, chunk_size: int) -> None:
    src = make_source(tmp_path / "src", [400_000, 400_000])
    bundle = tmp_path / "bundle"
    calls = 0

    def cancel_later() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(PackCancelled, match="cancelled"):
        pack_archive(
            bundle / "x.tar",
            [TarSource(src, "x")],
            chunk_size=chunk_size,
            should_cancel=cancel_later,
        )
    assert bundle_files(bundle) == []


def test_vanishing_source_file_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        pack_archive(tmp_path / "x.tar", [TarMember("a", tmp_path / "missing")])
    assert bundle_files(tmp_path) == []


def test_chunks_are_exact_and_concatenate_to_the_tar(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [10 * MiB])
    plain = pack_archive(tmp_path / "plain" / "x.tar", [TarSource(src, "x")])
    chunked = pack_archive(
        tmp_path / "chunked" / "x.tar", [TarSource(src, "x")], chunk_size=3 * MiB
    )
    assert [p.name for p in chunked.files] == [f"x.tar.000{i}.chunk" for i in range(4)]
    assert [p.stat().st_size for p in chunked.files[:3]] == [3 * MiB] * 3
    joined = b"".join(p.read_bytes() for p in chunked.files)
    assert joined == plain.path.read_bytes() == read_archive(tmp_path / "chunked" / "x.tar")
    assert chunked.sha256 == plain.sha256 == hashlib.sha256(joined).hexdigest()
    assert sorted(p.name for p in (tmp_path / "chunked").iterdir() if p.suffix == ".chunk") == [
        p.name for p in chunked.files
    ]
    assert verify_sidecars(tmp_path / "chunked") == []


def test_exact_multiple_has_no_empty_trailing_chunk(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [100])
    size = pack_archive(tmp_path / "probe.tar", [TarSource(src, "x")]).size
    assert size % 512 == 0
    result = pack_archive(tmp_path / "b" / "x.tar", [TarSource(src, "x")], chunk_size=size // 2)
    assert [p.stat().st_size for p in result.files] == [size // 2, size // 2]


def test_repack_with_fewer_chunks_removes_stale_ones(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [50_000])
    dest = tmp_path / "b" / "x.tar"
    pack_archive(dest, [TarSource(src, "x")], chunk_size=10_000, gost=False)
    pack_archive(dest, [TarSource(src, "x")])
    assert bundle_files(dest.parent) == ["x.tar", "x.tar.sha256"]
    result = pack_archive(dest, [TarSource(src, "x")], chunk_size=30_000)
    assert bundle_files(dest.parent) == sorted(
        [p.name for p in result.files] + [p.name + ".sha256" for p in result.files]
    )


def test_reader_accepts_a_trailing_empty_chunk(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [5000])
    result = pack_archive(tmp_path / "x.tar", [TarSource(src, "x")], chunk_size=4096)
    (tmp_path / f"x.tar.{len(result.files):04d}.chunk").write_bytes(b"")
    assert hashlib.sha256(read_archive(tmp_path / "x.tar")).hexdigest() == result.sha256


def test_reader_without_first_chunk_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "x.tar.0001.chunk").write_bytes(b"x")
    with pytest.raises(ChunkSetError, match=re.escape(str(tmp_path / "x.tar"))):
        read_archive(tmp_path / "x.tar")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(0, 20_000), max_size=4), chunk_size=st.integers(700, 40_000))
def test_chunk_round_trip(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], chunk_size: int
) -> None:
    work = tmp_path_factory.mktemp("rt")
    src = make_source(work / "src", sizes)
    result = pack_archive(work / "b" / "x.tar", [TarSource(src, "x")], chunk_size=chunk_size)
    lengths = [p.stat().st_size for p in result.files]
    assert all(n == chunk_size for n in lengths[:-1]) and 0 < lengths[-1] <= chunk_size
    data = read_archive(work / "b" / "x.tar")
    assert len(data) == result.size and hashlib.sha256(data).hexdigest() == result.sha256


class FullDisk:
    """A staged archive file that reports ENOSPC once ``limit`` bytes went to the whole disk."""

    def __init__(self, stream: IO[bytes], budget: list[int]) -> None:
        self._stream, self._budget = stream, budget

    def write(self, data: bytes) -> int:
        self._budget[0] -= len(data)
        if self._budget[0] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._stream.write(data)

    def close(self) -> None:
        self._stream.close()


def fill_disk_after(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = [limit]
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        stream = real_open(self, mode, *args, **kwargs)
        if mode == "wb" and self.name.endswith(".tmp"):
            return FullDisk(stream, budget)
        return stream

    monkeypatch.setattr(Path, "open", open_)


@pytest.mark.parametrize("chunk_size", [0, 1_000_000])
def test_disk_full_is_a_disk_space_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    src = make_source(tmp_path / "src", [3 * MiB])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    fill_disk_after(2 * MiB, monkeypatch)
    with pytest.raises(DiskSpaceError) as caught:
        pack_archive(bundle / "x.tar", [TarSource(src, "x")], chunk_size=chunk_size)
    monkeypatch.undo()
    assert str(bundle / "x.tar") in str(caught.value)
    assert bundle_files(bundle) == []


def test_gost_sidecars_for_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing computes GOST on the way but writes no .gostsum; the end-of-pull step writes
    one per chunk from those digests (no second read) and computes any other file's."""
    from d8mirror.bundle import checksums

    src = make_source(tmp_path / "src", [1500])
    result = pack_archive(tmp_path / "x.tar", [TarSource(src, "x")], chunk_size=1000, gost=True)
    assert not list(tmp_path.glob("*.gostsum"))
    with monkeypatch.context() as patch:
        patch.setattr(checksums, "gost_hex_file", lambda path: pytest.fail(f"read {path}"))
        assert checksums.write_gost_sidecars(tmp_path, "x.tar", known=result.gost) == list(
            result.files
        )
        assert checksums.write_gost_sidecars(tmp_path, known=result.gost) == list(result.files)
    (tmp_path / "foreign.tar").write_bytes(b"d8 wrote this")
    result.files[0].touch()  # changed since packing: its known digest is not used
    with monkeypatch.context() as patch:
        computed: list[str] = []
        real = checksums.gost_hex_file

        def counting(path: Path) -> str:
            computed.append(path.name)
            return real(path)

        patch.setattr(checksums, "gost_hex_file", counting)
        checksums.write_gost_sidecars(tmp_path, known=result.gost)
    assert sorted(computed) == ["foreign.tar", result.files[0].name]
    assert (tmp_path / "foreign.tar.gostsum").read_text() == gostcrypto.gosthash.new(
        "streebog256", data=b"d8 wrote this"
    ).hexdigest()
    (tmp_path / "foreign.tar").unlink()
    (tmp_path / "foreign.tar.gostsum").unlink()
    for chunk in result.files:
        text = (tmp_path / (chunk.name + ".gostsum")).read_text()
        assert text == gostcrypto.gosthash.new("streebog256", data=chunk.read_bytes()).hexdigest()
    assert verify_sidecars(tmp_path) == []
    result.files[1].write_bytes(b"tampered")
    problems = verify_sidecars(tmp_path)
    assert len(problems) == 2 and all("x.tar.0001.chunk" in p for p in problems)


def test_gost_off_writes_no_gostsum(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [10])
    pack_archive(tmp_path / "x.tar", [TarSource(src, "x")], gost=True)
    pack_archive(tmp_path / "x.tar", [TarSource(src, "x")])
    assert not list(tmp_path.glob("*.gostsum"))


def test_missing_sidecar_is_reported(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src", [10])
    pack_archive(tmp_path / "x.tar", [TarSource(src, "x")])
    pack_archive(tmp_path / "y.tar", [TarSource(src, "y")])
    (tmp_path / "x.tar.sha256").unlink()
    assert verify_sidecars(tmp_path) == [
        f"{tmp_path / 'x.tar'}: missing checksum file x.tar.sha256"
    ]
    (tmp_path / "y.tar.sha256").unlink()  # none at all: a bundle written by d8, no problem
    assert verify_sidecars(tmp_path) == []


def test_a_matching_archive_is_hashed_once_per_process_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from d8mirror.bundle import checksums

    archive = tmp_path / "package-x.tar"
    archive.write_bytes(os.urandom(4096))
    from d8mirror.hashing import sha256_file_hex as real  # what checksums imported

    archive.with_name(archive.name + ".sha256").write_text(
        checksums.sha256_line(real(archive), archive.name)
    )
    hashed: list[Path] = []

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(checksums, "sha256_file_hex", counting)
    checked = checksums.CheckedFiles()  # the process's memo, owned by the caller
    assert checksums.check_archive_sidecars(archive, checked) == []
    assert checksums.check_archive_sidecars(archive, checked) == []
    assert hashed == [archive]  # the second check trusts the first
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))  # same size, new content and mtime
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    problems = checksums.check_archive_sidecars(archive, checked)
    assert len(problems) == 1 and "does not match" in problems[0]
    assert len(hashed) == 2
