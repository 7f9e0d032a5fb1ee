"""Unpacking bundle archives into one unified tree (R-8.2, R-7.5, Q2, Q16, Q23)."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
from push_bundle_builder import PackageSpec, build_bundle, build_pinned_package

from d8mirror.bundle import discover_archives
from d8mirror.errors import UnsafeArchiveEntryError
from d8mirror.layout import Layout
from d8mirror.push.index_merge import Provenance
from d8mirror.push.routing import find_layouts
from d8mirror.push.short_tags import resolve_short_tags
from d8mirror.push.unified import WorkDir, default_tmp_dir, tree_size, unpack_all


def _sizes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def test_bundle_unpacks_into_one_tree_with_versions_merged(tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    archives = discover_archives(bundle)
    assert [a.name for a in archives] == [
        "package-console.tar",
        "package-versions.tar",
        "package-viewer.tar",
    ]
    result = unpack_all(archives, tmp_path / "unified")
    assert result.unpacked == ("package-console.tar", "package-versions.tar", "package-viewer.tar")
    assert find_layouts(tmp_path / "unified") == [
        "packages/console",
        "packages/console/extra/scanner",
        "packages/console/version",
        "packages/viewer",
        "packages/viewer/extra/scanner",
        "packages/viewer/version",
    ]
    version = Layout(tmp_path / "unified/packages/console/version")
    tags = sorted(e.short_tag or "" for e in version.entries())
    assert tags == ["alpha", "stable", "v1.0.0", "v1.1.0"]  # identical entries deduped
    sources = Provenance.load(version.path).sources
    assert all(set(a) == {"package-console.tar", "package-versions.tar"} for a in sources.values())
    # every bundle byte is written once: tree size ≈ payload of the archives (tar overhead aside)
    written = result.bytes_written
    assert written == tree_size(tmp_path / "unified")
    assert written < _sizes(archives)


def test_pinned_alias_beats_package_versions_tar(tmp_path: Path) -> None:
    """Q2: console pins stable → v1.0.0; package-versions.tar has upstream stable →
    v1.1.0. Whatever the order of archives, the pin wins and the conflict is reported."""
    pinned, _ = build_pinned_package(tmp_path / "a", "console", "v1.0.0")
    upstream, _ = build_bundle(
        tmp_path / "b", [PackageSpec("console", channels={"stable": "v1.1.0", "alpha": "v1.1.0"})]
    )
    for archives in (
        [pinned, upstream / "package-versions.tar"],
        [upstream / "package-versions.tar", pinned],
    ):
        shutil.rmtree(tmp_path / "unified", ignore_errors=True)
        unpack_all(archives, tmp_path / "unified")
        layout = tmp_path / "unified/packages/console/version"
        entries = Layout(layout).entries()
        assert len([e for e in entries if e.short_tag == "stable"]) == 2  # merge keeps both
        resolution = resolve_short_tags(entries, Provenance.load(layout).q2_preferred(entries))
        release = {e.short_tag: e.digest for e in entries if (e.short_tag or "").startswith("v")}
        assert resolution["stable"].digest == release["v1.0.0"]
        assert resolution["alpha"].digest == release["v1.0.0"]
        assert [c.short_tag for c in resolution.conflicts] == ["alpha", "stable"]


def _hostile_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    return path


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ("../../escape", tarfile.REGTYPE),
        ("/abs/path", tarfile.REGTYPE),
        ("packages/x/link", tarfile.SYMTYPE),
    ],
)
def test_unsafe_archive_is_an_error_naming_archive_and_entry(
    tmp_path: Path, entry: str, kind: bytes
) -> None:
    archive = _hostile_tar(tmp_path / "package-evil.tar", entry, kind)
    with pytest.raises(UnsafeArchiveEntryError) as info:
        unpack_all([archive], tmp_path / "out" / "unified")
    assert "package-evil.tar" in str(info.value) and entry.lstrip("/") in str(info.value)
    assert not (tmp_path / "escape").exists()


def test_unreadable_archive_is_a_warning_and_the_rest_unpacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    broken = bundle / "package-broken.tar"
    broken.write_bytes(b"this is not a tar at all" * 100)
    with caplog.at_level(logging.WARNING, logger="d8mirror.push"):
        result = unpack_all(discover_archives(bundle), tmp_path / "unified")
    assert [f[0] for f in result.failed] == ["package-broken.tar"]
    assert "Failed to unpack package-broken.tar" in caplog.text
    assert "package-console.tar" in result.unpacked
    assert (tmp_path / "unified/packages/console/index.json").is_file()


def test_workdir_removes_only_what_it_created(tmp_path: Path) -> None:
    user_tmp = tmp_path / "user-tmp"
    user_tmp.mkdir()
    (user_tmp / "keep.txt").write_text("mine")
    workdir = WorkDir(user_tmp)
    unified = workdir.prepare()
    (unified / "x").write_text("y")
    workdir.cleanup()
    assert sorted(p.name for p in user_tmp.iterdir()) == ["keep.txt"]
    fresh = WorkDir(tmp_path / "a" / "b")
    fresh.prepare()
    fresh.cleanup()
    assert not (tmp_path / "a").exists()


def test_default_tmp_dir(tmp_path: Path) -> None:
    assert default_tmp_dir(tmp_path, []) == tmp_path / ".tmp" / "mirror"
    archive = tmp_path / "x" / "package-a.tar"
    assert default_tmp_dir(None, [archive]) == tmp_path / "x" / ".tmp" / "mirror"


def test_index_json_written_by_merge_is_reference_shaped(tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    unpack_all(discover_archives(bundle), tmp_path / "unified")
    doc = json.loads((tmp_path / "unified/packages/console/version/index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in doc["manifests"]]
    assert refs == sorted(refs) and doc["schemaVersion"] == 2
