"""Filesystem helpers: atomic writes and links, staged renames, resumable ``.partial`` files.

The one guarantee: nothing half-written ever appears under a final file name. Every file is
written under a staging name beside its final name (same filesystem) and renamed into place
with ``os.replace`` once complete; a failure removes the staging file.

* :func:`write_atomic` / :func:`write_text_atomic`: small files, through a temporary file of a
  new unique name created exclusively (a symlink planted in the directory is never followed).
* :func:`link_atomic` / :func:`place_file`: a hard link (or, for :func:`place_file` across
  filesystems, a copy) appearing at once under its final name.
* :class:`Staging`: several ``<name>.tmp`` files committed together by renames, or discarded.
* :class:`PartialFile`: a download appended to ``<name>.partial`` with a running SHA-256, kept
  after a failure so a rerun resumes it, renamed to its final name once verified.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from d8mirror.errors import BundleError, MirrorError, wrap_os_error
from d8mirror.hashing import PIECE, as_digest
from d8mirror.names import PARTIAL_SUFFIX, TMP_SUFFIX, with_suffix

FILE_MODE = 0o644
#: errno values after which :func:`place_file` copies instead of hard-linking.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})


def staging_path(final: Path) -> Path:
    """``<name>.tmp`` beside ``final``."""
    return with_suffix(final, TMP_SUFFIX)


def partial_path(final: Path) -> Path:
    """``<name>.partial`` beside ``final``."""
    return with_suffix(final, PARTIAL_SUFFIX)


def remove_if_exists(path: Path) -> None:
    """Delete ``path``; a missing file is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def os_error(exc: OSError, path: Path, action: str) -> MirrorError:
    """ENOSPC → :class:`DiskSpaceError` naming ``path``; anything else → :class:`BundleError`."""
    if isinstance(exc, MirrorError):
        return exc
    wrapped = wrap_os_error(exc, str(path))
    if isinstance(wrapped, MirrorError):
        return wrapped
    return BundleError(
        f"cannot {action} {path}: {exc.strerror or exc}; check the path and its permissions"
    )


# -- whole small files ---------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``, through ``.<name>.<random>.tmp``.

    Raises ``OSError`` (ENOSPC as :class:`DiskSpaceError`); the temporary file is gone."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            os.fchmod(stream.fileno(), mode)
        os.replace(name, path)
    except BaseException as exc:
        remove_if_exists(Path(name))
        if isinstance(exc, OSError):
            raise wrap_os_error(exc, str(path)) from exc
        raise


def write_text_atomic(path: Path, text: str, *, mode: int = FILE_MODE) -> None:
    """:func:`write_atomic` of UTF-8 ``text``; a failure is a typed :class:`MirrorError`
    (:class:`DiskSpaceError`, else :class:`BundleError` naming the path)."""
    try:
        write_atomic(path, text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise os_error(exc, path, "write") from exc


# -- links ---------------------------------------------------------------------------------------
def link_atomic(src: Path, dest: Path) -> None:
    """Make ``dest`` a hard link to ``src`` at once (via ``.<name>.<random>.tmp``); raises
    ``OSError`` when a hard link is impossible (another filesystem, no permission)."""
    tmp = _unique_tmp(dest)
    try:
        os.link(src, tmp)
        os.replace(tmp, dest)
    finally:
        remove_if_exists(tmp)


def place_file(src: Path, dest: Path) -> None:
    """Atomically make ``dest`` a hard link to (or, across filesystems, a copy of) ``src``;
    creates ``dest``'s directory. Raises ``OSError`` (ENOSPC as :class:`DiskSpaceError`)."""
    tmp = _unique_tmp(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        remove_if_exists(tmp)
        raise wrap_os_error(exc, str(dest)) from exc


def _unique_tmp(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.urandom(16).hex()}{TMP_SUFFIX}")


# -- staged sets ---------------------------------------------------------------------------------
class Staging:
    """Staged ``(tmp, final)`` pairs committed together by renames, or all discarded."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []
        self._committed: list[Path] = []

    def add(self, tmp: Path, final: Path) -> None:
        self._pairs.append((tmp, final))

    def commit(self) -> None:
        """Rename every staged file to its final name, in the order they were added."""
        for tmp, final in self._pairs:
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise os_error(exc, final, "rename a staged file to") from exc
            self._committed.append(final)
        self._pairs = []

    def discard(self) -> None:
        """Delete every staged file and every final name this staging already placed."""
        for tmp, _final in self._pairs:
            remove_if_exists(tmp)
        for final in self._committed:
            remove_if_exists(final)
        self._pairs = []
        self._committed = []


# -- resumable downloads -------------------------------------------------------------------------
class PartialFile:
    """``<final>.partial`` being appended to, with the running SHA-256 of its content.

    Opening re-hashes what an earlier attempt left (streamed), so a download resumes from
    :attr:`length`. :meth:`commit` renames it to the final name; :meth:`close_keeping_progress`
    keeps the bytes for a rerun (an empty file is removed); :meth:`discard` deletes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.length = 0
        if path.exists():
            with path.open("rb") as existing:
                while piece := existing.read(PIECE):
                    self.hasher.update(piece)
                    self.length += len(piece)
        self._file: BinaryIO = path.open("ab")

    @classmethod
    def beside(cls, final: Path) -> PartialFile:
        """The partial file of ``final`` (``<final>.partial``)."""
        return cls(partial_path(final))

    def fit(self, limit: int | None) -> None:
        """Start over when what is kept is longer than ``limit`` bytes (it cannot be a prefix)."""
        if limit is not None and self.length > limit:
            self.restart()

    def append(self, piece: bytes) -> None:
        self._file.write(piece)
        self.hasher.update(piece)
        self.length += len(piece)

    def restart(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self.hasher = hashlib.sha256()
        self.length = 0

    @property
    def hex(self) -> str:
        return self.hasher.hexdigest()

    @property
    def digest(self) -> str:
        return as_digest(self.hex)

    def close(self) -> None:
        self._file.close()

    def close_keeping_progress(self) -> None:
        """Close after a failure: keep bytes for a later resume, drop an empty file."""
        self._file.close()
        if self.length == 0:
            remove_if_exists(self.path)

    def discard(self) -> None:
        self._file.close()
        remove_if_exists(self.path)

    def commit(self, dest: Path) -> None:
        """Rename to ``dest`` (complete and verified by the caller)."""
        self._file.flush()
        self._file.close()
        os.replace(self.path, dest)
