"""Safe, streaming unpack of bundle archives (spec §8.2; Part A Q16).

Only regular files are extracted; directory entries are ignored. Absolute paths, ``..``
components, symlinks, hardlinks, devices and fifos are refused with
:class:`~d8mirror.errors.UnsafeArchiveEntryError` naming the archive and the entry — nothing is
ever written outside the destination. Each file is written under a temporary name and renamed.
An incoming ``index.json`` that meets an existing one is handed to the caller to merge.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from d8mirror.errors import BundleError, MirrorError, UnsafeArchiveEntryError

from .atomic import os_error, remove_if_exists
from .checksums import PIECE
from .chunks import open_archive

INDEX_FILE = "index.json"
IndexCollision = Callable[[Path, Path], None]

_REFUSED_TYPES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


def safe_entry_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The relative path of a regular-file entry, or :class:`UnsafeArchiveEntryError`."""
    name = member.name
    refused = _REFUSED_TYPES.get(member.type)
    if refused is None and not member.isreg():
        refused = f"an unsupported entry type {member.type!r}"
    if refused is not None:
        raise _unsafe(archive, name, f"it is {refused}; bundles hold regular files only")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(archive, name, "it is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "it contains a '..' component")
    if not parts or "\\" in name or "\x00" in name:
        raise _unsafe(archive, name, "it is not a valid relative file name")
    return PurePosixPath(*parts)


def _unsafe(archive: Path, entry: str, reason: str) -> UnsafeArchiveEntryError:
    return UnsafeArchiveEntryError(
        f"refusing to unpack {archive}: entry {entry!r} is unsafe ({reason}); the archive was "
        "not made by d8 or d8mirror, or it was tampered with — do not use it")


def safe_unpack(archive: Path, dest: Path, *, on_index_collision: IndexCollision) -> list[str]:
    """Extract the regular files of ``archive`` (plain tar or chunk set) under ``dest``.

    Returns the extracted entry names (normalised relative paths) in archive order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    extracted: list[str] = []
    with open_archive(archive) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    relative = safe_entry_path(archive, member)
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - regular files always have data
                        raise _unsafe(archive, member.name, "it has no data")
                    _place(archive, root, relative, source, on_index_collision)
                    extracted.append(relative.as_posix())
        except tarfile.TarError as exc:
            raise BundleError(f"cannot read {archive}: {exc}; the archive is truncated or "
                              "corrupt, copy it again") from exc
    return extracted


def _target(archive: Path, root: Path, relative: PurePosixPath) -> Path:
    target = root.joinpath(*relative.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root):
        raise _unsafe(archive, relative.as_posix(),
                      "its directory resolves outside the destination through a symlink")
    return target


def _place(archive: Path, root: Path, relative: PurePosixPath, source: IO[bytes],
           on_index_collision: IndexCollision) -> None:
    try:
        target = _target(archive, root, relative)
        temp = _write_temp(target, source)
    except MirrorError:
        raise
    except OSError as exc:
        raise os_error(exc, root / relative, "unpack into") from exc
    try:
        if target.name == INDEX_FILE and target.exists():
            on_index_collision(target, temp)
        else:
            os.replace(temp, target)
    except OSError as exc:
        raise os_error(exc, target, "unpack into") from exc
    finally:
        remove_if_exists(temp)


def _write_temp(target: Path, source: IO[bytes]) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, PIECE)
        temp.chmod(0o644)
    except BaseException:
        remove_if_exists(temp)
        raise
    return temp
