"""Pack sources into a bundle archive atomically, with checksums (R-7.3, R-7.4, R-7.6).

The archive is streamed once: tar writer → cancellation check → file or exact-size chunks, each
hashed as written (the whole stream too when chunked; unchunked, the one file's hash is the
archive's), staged under ``….tmp`` names. Only a complete archive is renamed into place,
together with its ``.sha256`` sidecars (a GOST digest computed on the way is returned, for the
``.gostsum`` written at the end of the pull). Any failure, cancellation or interrupt deletes
every staged file and re-raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from d8mirror.errors import BundleError, ConfigError
from d8mirror.files import Staging

from .checksums import KnownDigest
from .chunks import ArchiveFileWriter, remove_stale_finals, remove_stale_staging
from .tarwriter import TarMember, TarSource, collect_members, write_tar


class PackCancelled(BundleError):
    """Packing stopped because the caller asked to cancel; nothing was left behind."""


@dataclass(frozen=True)
class ArchiveResult:
    path: Path  # canonical "<x>.tar" path
    files: tuple[Path, ...]  # the tar, or the chunks in order
    size: int
    sha256: str  # of the whole archive stream
    #: GOST digests computed while writing (``gost=True``), by file name
    gost: dict[str, KnownDigest] = field(default_factory=dict)


class _ArchiveStream:
    """Checks for cancellation on every write (the sink hashes what it writes)."""

    def __init__(self, sink: ArchiveFileWriter, should_cancel: Callable[[], bool] | None) -> None:
        self._sink = sink
        self._should_cancel = should_cancel

    def write(self, data: bytes) -> int:
        if self._should_cancel is not None and self._should_cancel():
            raise PackCancelled(
                f"packing {self._sink.archive} was cancelled; no archive was written"
            )
        return self._sink.write(data)


def pack_archive(
    dest: Path,
    sources: Sequence[TarSource | TarMember],
    *,
    chunk_size: int = 0,
    gost: bool = False,
    should_cancel: Callable[[], bool] | None = None,
) -> ArchiveResult:
    """Write ``dest`` (or its chunks of exactly ``chunk_size`` bytes) atomically with sidecars."""
    if chunk_size < 0:
        raise ConfigError("Chunk size cannot be less than zero GB")
    members = collect_members(sources)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest)
    staging = Staging()
    sink = ArchiveFileWriter(dest, staging, chunk_size=chunk_size, gost=gost)
    stream = _ArchiveStream(sink, should_cancel)
    try:
        size = write_tar(stream, members)  # type: ignore[arg-type]
        files = sink.finish()
        staging.commit()
    except BaseException:
        sink.abort()
        staging.discard()
        raise
    # A rewritten file's old .gostsum is stale: the end of a successful pull writes it anew.
    remove_stale_finals(dest, files, gost=False)
    known = {
        path.name: KnownDigest.of(path, digest)
        for path, digest in zip(files, sink.gost_digests, strict=False)
    }
    return ArchiveResult(path=dest, files=files, size=size, sha256=sink.sha256, gost=known)
