"""Bundle discovery (R-8.1, AC-51, AC-56, AC-58)."""

from __future__ import annotations

from pathlib import Path

import pytest

from d8mirror.bundle import (
    BundleFileStat,
    bundle_stats,
    canonical_package_path,
    discover_archives,
    is_package_file,
    package_name_from_path,
)
from d8mirror.errors import BundleError, ConfigError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("platform.tar", True),
        ("platform.tar.0000.chunk", True),
        ("platform.tar.0001.chunk", True),
        ("platform.tar.12345.chunk", True),
        ("module-foo.tar", True),
        ("platform.chunk", False),
        ("platform.0000.chunk", False),
        ("platform.tar.abcd.chunk", False),
        ("platform.tar.000.chunk", False),
        ("platform.tar.gz", False),
        ("platform.tar.sha256", False),
        ("platform.tar.0000.chunk.gostsum", False),
        ("readme.txt", False),
    ],
)
def test_is_package_file(name: str, expected: bool) -> None:
    assert is_package_file(name) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/bundle/platform.tar", "/bundle/platform.tar"),
        ("/bundle/platform.tar.0000.chunk", "/bundle/platform.tar"),
        ("/bundle/platform.tar.12345.chunk", "/bundle/platform.tar"),
        (
            "/backups/bundle.tar.gz.d/platform.tar.0000.chunk",
            "/backups/bundle.tar.gz.d/platform.tar",
        ),
        ("/a.tar.d/module-x.tar", "/a.tar.d/module-x.tar"),
    ],
)
def test_canonical_package_path(path: str, expected: str) -> None:
    assert canonical_package_path(Path(path)) == Path(expected)


def test_package_name_from_path() -> None:
    assert package_name_from_path(Path("/bundle/module-foo.tar")) == "module-foo"
    assert package_name_from_path(Path("/b/package-x.tar.0002.chunk")) == "package-x"


def touch(path: Path, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_directory_collapses_chunks_dedups_and_sorts(tmp_path: Path) -> None:
    for name in [
        "platform.tar.0000.chunk",
        "platform.tar.0001.chunk",
        "b.tar",
        "a.tar",
        "a.tar.sha256",
        "a.tar.gostsum",
        "other.chunk",
        "notes.txt",
    ]:
        touch(tmp_path / name)
    (tmp_path / "dir.tar").mkdir()
    extra = touch(tmp_path / "elsewhere" / "z.tar.0000.chunk")
    assert discover_archives(tmp_path, [tmp_path / "a.tar", extra]) == [
        tmp_path / "a.tar",
        tmp_path / "b.tar",
        tmp_path / "elsewhere" / "z.tar",
        tmp_path / "platform.tar",
    ]


def test_single_file_argument(tmp_path: Path) -> None:
    chunk = touch(tmp_path / "x.tar.0000.chunk")
    assert discover_archives(chunk) == [tmp_path / "x.tar"]
    with pytest.raises(
        ConfigError, match="invalid images bundle: must be a directory, tar or a chunked package"
    ):
        discover_archives(touch(tmp_path / "x.zip"))


def test_error_messages(tmp_path: Path) -> None:
    touch(tmp_path / "empty" / "readme.md")
    with pytest.raises(BundleError, match="no packages found in bundle directory"):
        discover_archives(tmp_path / "empty")
    with pytest.raises(
        ConfigError,
        match="no packages to push: specify a bundle directory before registry URL, or use --file",
    ):
        discover_archives(None)
    with pytest.raises(ConfigError, match="could not read package"):
        discover_archives(None, [tmp_path / "missing.tar"])
    with pytest.raises(ConfigError, match="is a directory, expected a tar or chunked package"):
        discover_archives(None, [tmp_path / "empty"])
    with pytest.raises(ConfigError, match="is not a tar or chunked package"):
        discover_archives(None, [tmp_path / "empty" / "readme.md"])
    with pytest.raises(ConfigError, match="could not read images bundle"):
        discover_archives(tmp_path / "nowhere")


def test_bundle_stats_groups_chunks_and_ignores_sidecars(tmp_path: Path) -> None:
    touch(tmp_path / "module-a.tar.0000.chunk", 30)
    touch(tmp_path / "module-a.tar.0001.chunk", 20)
    touch(tmp_path / "module-a.tar.0000.chunk.gostsum", 64)
    touch(tmp_path / "platform.tar", 100)
    touch(tmp_path / "platform.tar.gostsum", 64)
    touch(tmp_path / "platform.tar.sha256", 80)
    touch(tmp_path / "deckhousereleases.yaml", 7)
    stats = bundle_stats(tmp_path)
    assert stats == [BundleFileStat("module-a.tar", 50, 2), BundleFileStat("platform.tar", 100, 0)]
    assert sum(s.size for s in stats) == 150


def test_bundle_stats_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        bundle_stats(tmp_path / "missing")
