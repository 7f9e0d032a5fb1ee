"""``d8mirror verify`` runs push's own checks (one code path): it fails every bundle push
refuses, names the archive, and agrees with push on what is fine; sidecars follow d8's
"rename archives freely"; a bundle written by d8 (no sidecars) verifies with a note."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from push_bundle_builder import Expected, PackageSpec, build_package_layouts, pack_package

from d8mirror.bundle import discover_archives
from d8mirror.bundle.checksums import sha256_line
from d8mirror.errors import BundleError
from d8mirror.hashing import sha256_file_hex
from d8mirror.names import SHA256_SUFFIX
from d8mirror.push.validate import refuse_invalid
from d8mirror.verify import NO_SIDECARS, verify_bundle

ARCHIVE = "package-alpha.tar"


def _bundle(
    tmp: Path,
    *,
    chunk_size: int = 0,
    edit: Callable[[Path], None] | None = None,
) -> Path:
    root = build_package_layouts(tmp / "work", PackageSpec("alpha", layer_size=20000), Expected())
    if edit is not None:
        edit(root)
    bundle = tmp / "bundle"
    bundle.mkdir(exist_ok=True)
    pack_package(bundle, root, "alpha", chunk_size=chunk_size)
    return bundle


def _reseal(path: Path) -> None:
    path.with_name(path.name + SHA256_SUFFIX).write_text(
        sha256_line(sha256_file_hex(path), path.name)
    )


def _add_entry(bundle: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    """Append one entry to the plain archive (rewritten whole, sidecar refreshed)."""
    archive = bundle / ARCHIVE
    with tarfile.open(archive) as tin:
        members = [
            (m, tin.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tin.getmembers()
        ]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tout:
        for member, body in members:
            tout.addfile(member, io.BytesIO(body))
        info.size = len(data) if info.isreg() else 0
        tout.addfile(info, io.BytesIO(data) if info.isreg() else None)
    _reseal(archive)


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _both_refuse(bundle: Path, *words: str) -> list[str]:
    """verify fails naming the archive, and push's check refuses the same bundle."""
    report = verify_bundle(bundle)
    assert not report.ok, report.verdict()
    with pytest.raises(BundleError) as info:
        refuse_invalid(discover_archives(bundle))
    for word in words:
        assert any(word in p for p in report.problems), report.problems
        assert word in str(info.value)
    return report.problems


@pytest.mark.parametrize(
    ("entry", "word"),
    [
        (_entry("../escape"), "'..' component"),
        (_entry("/abs/file"), "absolute path"),
        (_entry("packages/alpha/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (_entry("packages/alpha/hard", tarfile.LNKTYPE, "packages/alpha/oci-layout"), "hardlink"),
        (_entry("packages/alpha/dev", tarfile.CHRTYPE), "character device"),
        (_entry("packages/alpha/fifo", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_unsafe_entries_fail_verify_as_they_fail_push(
    tmp_path: Path, entry: tarfile.TarInfo, word: str
) -> None:
    bundle = _bundle(tmp_path)
    _add_entry(bundle, entry, b"bad")
    _both_refuse(bundle, ARCHIVE, word)


def test_a_sparse_entry_fails_verify(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    source = tmp_path / "holes.img"
    with source.open("wb") as handle:
        handle.seek(8 << 20)
        handle.write(b"x")
    subprocess.run(
        [
            "tar",
            "--sparse",
            "--format=gnu",
            "-cf",
            str(bundle / "package-holes.tar"),
            "-C",
            str(tmp_path),
            "holes.img",
        ],
        check=True,
    )
    _both_refuse(bundle, "package-holes.tar", "sparse")


def test_an_invalid_short_tag_fails_verify(tmp_path: Path) -> None:
    def retag(root: Path) -> None:
        index = root / "version" / "index.json"
        doc = json.loads(index.read_text())
        doc["manifests"][0]["annotations"]["io.deckhouse.image.short_tag"] = "a" * 200
        index.write_text(json.dumps(doc))

    _both_refuse(_bundle(tmp_path, edit=retag), ARCHIVE, "invalid io.deckhouse.image.short_tag")


def test_a_symlinked_archive_fails_verify(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / ARCHIVE).rename(tmp_path / "real.tar")
    (bundle / ARCHIVE).symlink_to(tmp_path / "real.tar")
    _both_refuse(bundle, f"{ARCHIVE} is a symlink")


def test_a_junk_trailing_chunk_fails_verify(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    count = len(list(bundle.glob("*.chunk")))
    junk = bundle / f"{ARCHIVE}.{count:04d}.chunk"
    junk.write_bytes(os.urandom(4096))
    _reseal(junk)
    _both_refuse(bundle, ARCHIVE, "after its end-of-archive marker")


def test_a_gzip_tar_fails_verify_and_push_alike(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    archive = bundle / ARCHIVE
    archive.write_bytes(gzip.compress(archive.read_bytes()))
    _reseal(archive)
    _both_refuse(bundle, ARCHIVE, "gzip-compressed")


def test_verify_and_push_agree_on_an_intact_chunked_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    assert verify_bundle(bundle).ok
    check = refuse_invalid(discover_archives(bundle))
    assert check.ok and check.manifests >= 5


def test_a_renamed_archive_with_its_renamed_sidecar_verifies(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    for suffix in ("", SHA256_SUFFIX):
        (bundle / (ARCHIVE + suffix)).rename(bundle / ("package-renamed.tar" + suffix))
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()
    (bundle / "package-renamed.tar").write_bytes(b"\0" * 1024)  # still checked by digest
    assert any("SHA-256 does not match" in p for p in verify_bundle(bundle).problems)


def test_renamed_chunks_with_their_sidecars_verify(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    for path in sorted(bundle.iterdir()):
        path.rename(bundle / path.name.replace("package-alpha", "package-other"))
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()


def test_a_bundle_written_by_d8_without_sidecars_verifies_with_a_note(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / (ARCHIVE + SHA256_SUFFIX)).unlink()
    report = verify_bundle(bundle)
    assert report.ok, report.verdict()
    assert report.notes == [NO_SIDECARS]
    assert report.verdict().startswith("OK: ") and "Note: no .sha256 sidecars" in report.verdict()
    assert report.to_json()["notes"] == [NO_SIDECARS]


def test_an_empty_trailing_chunk_as_d8_may_write_it_is_accepted(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    count = len(list(bundle.glob("*.chunk")))
    empty = bundle / f"{ARCHIVE}.{count:04d}.chunk"
    empty.write_bytes(b"")
    _reseal(empty)
    assert verify_bundle(bundle).ok
    assert refuse_invalid(discover_archives(bundle)).ok
