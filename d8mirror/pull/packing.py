"""Pack pulled packages into bundle archives (R-7.1, R-6.9; Q22)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from d8mirror.bundle import ArchiveResult, TarSource, pack_archive
from d8mirror.bundle.checksums import KnownDigest
from d8mirror.layout import Layout
from d8mirror.names import EXTRA, PACKAGES, VERSION, VERSIONS_ARCHIVE, package_archive_name


class ArchiveInfo(BaseModel):
    """One archive written into a bundle dir (small and JSON-able: a Prefect task result)."""

    path: str = Field(description="The canonical <name>.tar path (chunks sit beside it).")
    files: list[str] = Field(description="The tar, or its chunks in order.")
    size: int
    sha256: str = Field(description="Of the whole archive stream.")
    gost: dict[str, KnownDigest] = Field(
        default_factory=dict,
        description="GOST digests computed while packing, by file name (for the .gostsum files "
        "the end of the pull writes; used only while a file is unchanged).",
    )

    @classmethod
    def of(cls, result: ArchiveResult) -> ArchiveInfo:
        return cls(
            path=str(result.path),
            files=[str(f) for f in result.files],
            size=result.size,
            sha256=result.sha256,
            gost=result.gost,
        )


def package_layouts(work_dir: Path) -> list[Layout]:
    """Main, ``version/`` and ``extra/*`` layouts of a package working dir that exist."""
    candidates = [work_dir, work_dir / VERSION]
    extra_root = work_dir / EXTRA
    if extra_root.is_dir():
        candidates += sorted(p for p in extra_root.iterdir() if p.is_dir())
    return [Layout.open(p) for p in candidates if (p / "index.json").is_file()]


def has_images(work_dir: Path) -> bool:
    return any(layout.has_images() for layout in package_layouts(work_dir))


def pack_package(
    work_dir: Path,
    bundle_dir: Path,
    name: str,
    *,
    chunk_size: int = 0,
    gost: bool = False,
    should_cancel: Callable[[], bool] | None = None,
) -> ArchiveResult | None:
    """``package-<name>.tar`` with entries under ``packages/<name>/``; None for an empty package
    (no stub archive is ever written)."""
    if not has_images(work_dir):
        return None
    return pack_archive(
        bundle_dir / package_archive_name(name),
        [TarSource(work_dir, f"{PACKAGES}/{name}")],
        chunk_size=chunk_size,
        gost=gost,
        should_cancel=should_cancel,
    )


def pack_versions(
    layouts: Sequence[tuple[str, Path]],
    bundle_dir: Path,
    *,
    chunk_size: int = 0,
    gost: bool = False,
) -> ArchiveResult | None:
    """``package-versions.tar`` from ``(name, version-layout dir)`` pairs that hold images."""
    sources = [
        TarSource(path, f"{PACKAGES}/{name}/{VERSION}")
        for name, path in sorted(layouts)
        if (path / "index.json").is_file() and Layout.open(path).has_images()
    ]
    if not sources:
        return None
    return pack_archive(bundle_dir / VERSIONS_ARCHIVE, sources, chunk_size=chunk_size, gost=gost)
