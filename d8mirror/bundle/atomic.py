"""Atomic file placement: write under a staging name, rename into place (spec §7.3).

Nothing half-written ever appears under a final file name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from d8mirror.errors import BundleError, MirrorError, wrap_os_error

TMP_SUFFIX = ".tmp"


def staging_path(final: Path) -> Path:
    """``<name>.tmp`` beside ``final``."""
    return final.with_name(final.name + TMP_SUFFIX)


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
    return BundleError(f"cannot {action} {path}: {exc.strerror or exc}; check the path and its "
                       "permissions")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file under ``<path>.tmp`` and rename it to ``path``."""
    tmp = staging_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        remove_if_exists(tmp)
        if isinstance(exc, OSError):
            raise os_error(exc, path, "write") from exc
        raise


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
