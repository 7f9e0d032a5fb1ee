"""Deterministic tar streams (R-7.2; Q-TAR).

Same source state ⇒ byte-identical tar: members sorted by name, regular files only (no directory
entries), GNU format (long names), mtime 0, uid/gid 0, empty owner names, mode ``0o644``.
The reference writes mode ``0777``; ``d8 mirror push`` ignores modes, so d8mirror writes the
conventional non-executable mode. File data is streamed in 1 MiB pieces.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from d8mirror.errors import BundleError, MirrorError

from .checksums import PIECE

MEMBER_MODE = 0o644


@dataclass(frozen=True)
class TarSource:
    """Every regular file under ``root`` (recursive), named ``<prefix>/<relative posix path>``."""

    root: Path
    prefix: str


@dataclass(frozen=True)
class TarMember:
    """One explicit member, e.g. a blob taken straight from the blob store."""

    arcname: str
    path: Path


def _walk_files(source: TarSource) -> Iterator[TarMember]:
    if not source.root.is_dir():
        raise BundleError(f"cannot pack {source.root}: it is not a directory")
    prefix = source.prefix.strip("/")
    for dirpath, dirnames, filenames in os.walk(source.root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(
                    f"cannot pack {path}: only regular files may go into an archive, this is a "
                    f"{_kind(mode)}; remove it from {source.root}"
                )
            relative = path.relative_to(source.root).as_posix()
            yield TarMember(f"{prefix}/{relative}" if prefix else relative, path)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device or special file"


def collect_members(sources: Sequence[TarSource | TarMember]) -> list[TarMember]:
    """Members of ``sources`` sorted by arcname; a duplicate arcname is a :class:`BundleError`."""
    by_name: dict[str, TarMember] = {}
    for source in sources:
        members = [source] if isinstance(source, TarMember) else _walk_files(source)
        for member in members:
            previous = by_name.setdefault(member.arcname, member)
            if previous is not member:
                raise BundleError(
                    f"duplicate archive entry {member.arcname!r} from {previous.path} and "
                    f"{member.path}; each path inside an archive must come from one file"
                )
    return [by_name[name] for name in sorted(by_name)]


def _tarinfo(member: TarMember, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.arcname)
    info.size = size
    info.mode = MEMBER_MODE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _CountingWriter:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def write(self, data: bytes) -> int:
        self._stream.write(data)
        self.count += len(data)
        return len(data)

    def tell(self) -> int:
        return self.count


def write_tar(stream: BinaryIO, sources: Sequence[TarSource | TarMember]) -> int:
    """Write a deterministic tar of ``sources`` to ``stream``; return the bytes written."""
    members = collect_members(sources)
    counter = _CountingWriter(stream)
    # Plain "w" mode on a caller-owned stream: tarfile buffers nothing and, on an exception,
    # writes nothing more (no trailer), so a failed archive is never made to look complete.
    tar = tarfile.TarFile(
        fileobj=counter,  # type: ignore[arg-type]
        mode="w",
        format=tarfile.GNU_FORMAT,
        copybufsize=PIECE,
    )
    for member in members:
        _add_member(tar, member)
    tar.close()
    return counter.count


def _add_member(tar: tarfile.TarFile, member: TarMember) -> None:
    try:
        with member.path.open("rb") as data:
            size = os.fstat(data.fileno()).st_size
            tar.addfile(_tarinfo(member, size), data)
    except MirrorError:
        raise
    except OSError as exc:
        raise BundleError(
            f"cannot pack {member.path} as {member.arcname!r}: {exc.strerror or exc}; the file "
            "must stay readable and unchanged while the archive is written"
        ) from exc
