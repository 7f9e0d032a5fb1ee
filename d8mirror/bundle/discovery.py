"""Find package archives in a bundle (R-8.1, AC-51, AC-56, AC-58).

A package file is ``*.tar`` or a chunk ``<name>.tar.NNNN.chunk`` (four or more digits); chunks
collapse to their canonical ``<name>.tar``. Only the file name is inspected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from d8mirror.errors import BundleError, ConfigError, PathNotFoundError
from d8mirror.names import ARCHIVE_SUFFIX, CHUNK_NAME


def _chunk_base(name: str) -> str | None:
    """``x.tar.0000.chunk`` → ``x.tar``; None for anything else (a chunk of a non-tar too)."""
    match = CHUNK_NAME.match(name)
    return match["base"] if match and match["base"].endswith(ARCHIVE_SUFFIX) else None


def is_package_file(name: str) -> bool:
    """Whether a file name (or path) names a tar or a chunk of a tar."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(ARCHIVE_SUFFIX) or _chunk_base(base) is not None


def canonical_package_path(path: Path) -> Path:
    """``…/platform.tar.0000.chunk`` → ``…/platform.tar``; other paths unchanged."""
    base = _chunk_base(path.name)
    return path.with_name(base) if base else path


def package_name_from_path(path: Path) -> str:
    """``/bundle/module-foo.tar`` → ``module-foo`` (chunks give their archive's name)."""
    name = canonical_package_path(path).name
    return name.removesuffix(ARCHIVE_SUFFIX)


def discover_archives(bundle: Path | None, files: Sequence[Path] = ()) -> list[Path]:
    """Canonical archive paths to push from a bundle dir or file and ``--file`` paths, sorted."""
    found: list[Path] = []
    if bundle is not None:
        found += _from_bundle_arg(bundle)
    found += [_from_file_flag(path) for path in files]
    if not found:
        raise ConfigError(
            "no packages to push: specify a bundle directory before registry URL, "
            "or use --file to specify tar/chunked package"
        )
    return sorted(set(found))


def _from_bundle_arg(bundle: Path) -> list[Path]:
    if not bundle.exists():
        raise PathNotFoundError(
            f"could not read images bundle: {bundle} does not exist", path=str(bundle)
        )
    if bundle.is_dir():
        # Symlinks are listed too, so that the push's checks refuse them by name.
        packages = [
            canonical_package_path(p)
            for p in bundle.iterdir()
            if (p.is_file() or p.is_symlink()) and is_package_file(p.name)
        ]
        if not packages:
            raise BundleError(f"no packages found in bundle directory {bundle}")
        return packages
    if is_package_file(bundle.name):
        return [canonical_package_path(bundle)]
    raise ConfigError(
        f"invalid images bundle: must be a directory, tar or a chunked package (got {bundle})"
    )


def _from_file_flag(path: Path) -> Path:
    if not path.exists():
        raise PathNotFoundError(
            f"could not read package {str(path)!r}: no such file", path=str(path)
        )
    if path.is_dir():
        raise ConfigError(
            f"--file entry {str(path)!r} is a directory, expected a tar or chunked package"
        )
    if not is_package_file(path.name):
        raise ConfigError(f"--file entry {str(path)!r} is not a tar or chunked package")
    return canonical_package_path(path)


@dataclass(frozen=True)
class BundleFileStat:
    name: str  # canonical archive file name, e.g. "module-a.tar"
    size: int  # bytes of the tar or of all its chunks
    chunks: int  # 0 for a plain tar


def bundle_stats(bundle_dir: Path) -> list[BundleFileStat]:
    """Archives in ``bundle_dir`` with sizes, chunks grouped, sorted by name; sidecars ignored."""
    if not bundle_dir.is_dir():
        raise BundleError(f"cannot collect bundle stats: {bundle_dir} is not a directory")
    sizes: dict[str, int] = {}
    chunks: dict[str, int] = {}
    for path in bundle_dir.iterdir():
        if not path.is_file():
            continue
        base = _chunk_base(path.name)
        if base is None and not path.name.endswith(ARCHIVE_SUFFIX):
            continue
        name = base or path.name
        sizes[name] = sizes.get(name, 0) + path.stat().st_size
        chunks[name] = chunks.get(name, 0) + (1 if base else 0)
    return [BundleFileStat(name, sizes[name], chunks[name]) for name in sorted(sizes)]
