"""Push never says "completed" for a bundle it did not push whole: every archive is read to its
real end and every layout checked before the first request that writes
(:mod:`d8mirror.push.validate`), and a refused bundle pushes NOTHING (the target registry sees
no request at all). Hostile input is refused by name, with bounded memory, disk and time."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import Expected, PackageSpec, build_package_layouts, pack_package
from push_stages import push_bundle

from d8mirror.bundle import discover_archives
from d8mirror.bundle.checksums import sha256_line
from d8mirror.bundle.unpack import safe_unpack
from d8mirror.errors import (
    BundleError,
    ConfigError,
    IntegrityError,
    MirrorError,
    UnsafeArchiveEntryError,
)
from d8mirror.hashing import sha256_file_hex
from d8mirror.names import SHA256_SUFFIX
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.pusher import push_layout
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.unified import WorkDir, default_tmp_dir, unpack_all
from d8mirror.push.validate import MAX_ARCHIVE_ENTRIES, MAX_INDEX_BYTES
from d8mirror.push.warmup import PushWarmer
from d8mirror.registry import RegistryClient, TLSOptions

_ns = itertools.count()
ARCHIVE = "package-alpha.tar"


def _bundle(
    tmp: Path,
    *,
    chunk_size: int = 0,
    edit: Callable[[Path], None] | None = None,
    name: str = "alpha",
) -> Path:
    root = build_package_layouts(tmp / "work", PackageSpec(name, layer_size=20000), Expected())
    if edit is not None:
        edit(root)
    bundle = tmp / "bundle"
    bundle.mkdir(exist_ok=True)
    pack_package(bundle, root, name, chunk_size=chunk_size)
    return bundle


def _reseal(path: Path) -> None:
    """Rewrite the sidecar of ``path`` for its current bytes (a consistent but bad copy)."""
    path.with_name(path.name + SHA256_SUFFIX).write_text(
        sha256_line(sha256_file_hex(path), path.name)
    )


def _retar(archive: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Rewrite a plain tar with each member's bytes passed through ``change`` (None drops it)."""
    with tarfile.open(archive) as tin:
        members = [
            (m, tin.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tin.getmembers()
        ]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tout:
        for member, data in members:
            new = change(member.name, data)
            if new is not None:
                member.size = len(new)
                tout.addfile(member, io.BytesIO(new))
    _reseal(archive)


def _refused(server: Any, tmp: Path, bundle: Path) -> str:
    """Push ``bundle``; it must be refused with the registry seeing no request at all."""
    target = parse_target(f"{server.host}/checks-{next(_ns)}/ee")
    with server.client() as client:
        server.clear_requests()
        with pytest.raises(MirrorError) as info:
            push_bundle(
                client, discover_archives(bundle), tmp / "t", target, Router.from_suffixes()
            )
    assert server.requests() == [], "a refused bundle must push nothing"
    with server.client() as client:
        assert f"{target.path}/packages/alpha" not in client.list_repositories()
    return str(info.value)


# -- archives read to their real end --------------------------------------------------------------


def test_a_missing_middle_chunk_with_its_sidecar_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    for path in bundle.glob(f"{ARCHIVE}.0002.chunk*"):
        path.unlink()
    message = _refused(registry2, tmp_path, bundle)
    assert ARCHIVE in message and "0002.chunk is missing" in message


def test_a_missing_last_chunk_with_its_sidecar_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    last = sorted(bundle.glob("*.chunk"))[-1]
    last.unlink()
    last.with_name(last.name + SHA256_SUFFIX).unlink()
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}:" in message and "truncated" in message


def test_a_missing_last_chunk_that_held_only_the_end_marker_is_refused(
    registry2: Any, tmp_path: Path
) -> None:
    """Every entry complete, only the end-of-archive marker lost with the last chunk: there is
    no count header, the missing marker is what tells."""
    bundle = _bundle(tmp_path)
    plain = bundle / ARCHIVE
    with tarfile.open(plain) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + (last.size + 511) // 512 * 512
    data = plain.read_bytes()
    plain.unlink()
    plain.with_name(ARCHIVE + SHA256_SUFFIX).unlink()
    first = bundle / f"{ARCHIVE}.0000.chunk"
    first.write_bytes(data[:end])
    _reseal(first)
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}: ends at byte {end} without its end-of-archive marker" in message


def test_two_swapped_chunks_are_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    one, two = (bundle / f"{ARCHIVE}.0001.chunk", bundle / f"{ARCHIVE}.0002.chunk")
    for suffix in ("", SHA256_SUFFIX):  # each chunk moves with its own sidecar
        a, b = one.with_name(one.name + suffix), two.with_name(two.name + suffix)
        spare = a.with_name("spare")
        a.rename(spare)
        b.rename(a)
        spare.rename(b)
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}:" in message


def test_a_junk_trailing_chunk_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    count = len(list(bundle.glob("*.chunk")))
    junk = bundle / f"{ARCHIVE}.{count:04d}.chunk"
    junk.write_bytes(b"left over from another pack" * 50)
    _reseal(junk)
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}:" in message and "after its end-of-archive marker" in message


def test_a_damaged_header_in_the_middle_of_a_plain_tar_is_refused(
    registry2: Any, tmp_path: Path
) -> None:
    """tarfile takes an invalid header for the end of the archive: without the end check the
    rest of the archive would be silently lost."""
    bundle = _bundle(tmp_path)
    archive = bundle / ARCHIVE
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    middle = members[len(members) // 2]
    data = bytearray(archive.read_bytes())
    data[middle.offset + 5] ^= 0x20  # in the name field: the header checksum breaks
    archive.write_bytes(bytes(data))
    _reseal(archive)
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}:" in message and f"damaged entry header at byte {middle.offset}" in message


def test_a_truncated_plain_tar_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    archive = bundle / ARCHIVE
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    with archive.open("r+b") as handle:  # cut right after the last entry's data
        handle.truncate(last.offset_data + (last.size + 511) // 512 * 512)
    _reseal(archive)
    message = _refused(registry2, tmp_path, bundle)
    assert "end-of-archive marker" in message


# -- layouts: index.json, manifests, names ------------------------------------------------------


def test_a_malformed_index_json_is_refused(registry2: Any, tmp_path: Path) -> None:
    def malform(root: Path) -> None:
        (root / "extra/scanner/index.json").write_text('{"manifests": [{"digest": "sha256:nope"}]}')

    bundle = _bundle(tmp_path, edit=malform)
    message = _refused(registry2, tmp_path, bundle)
    assert ARCHIVE in message and "packages/alpha/extra/scanner/index.json" in message


def _first_manifest(layout: Path) -> Path:
    digest: str = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return layout / "blobs/sha256" / digest[7:]


def test_a_tampered_manifest_is_refused_before_its_tag_is_published(
    registry2: Any, tmp_path: Path
) -> None:
    def tamper(root: Path) -> None:
        manifest = _first_manifest(root)
        manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion"', b'"schemaversion"'))

    message = _refused(registry2, tmp_path, _bundle(tmp_path, edit=tamper))
    assert ARCHIVE in message and "does not match its digest" in message


def test_the_pusher_rehashes_a_manifest_before_it_puts_it(registry2: Any, tmp_path: Path) -> None:
    """If the tree changes after the checks, the tagged manifest is still never PUT."""
    bundle = _bundle(tmp_path)
    unified = tmp_path / "unified"
    unpack_all(discover_archives(bundle), unified)
    manifest = _first_manifest(unified / "packages/alpha")
    manifest.write_bytes(manifest.read_bytes() + b" ")
    repository = f"checks-{next(_ns)}/ee/packages/alpha"
    with registry2.client() as client:
        registry2.clear_requests()
        with pytest.raises(IntegrityError, match="does not match its digest"):
            push_layout(
                client,
                unified / "packages/alpha",
                "packages/alpha",
                repository,
                locations=BlobLocations(),
            )
    assert registry2.count("PUT", "/manifests/") == 0


def test_a_layout_path_that_is_no_repository_name_is_refused(
    registry2: Any, tmp_path: Path
) -> None:
    def misname(root: Path) -> None:
        (root / "extra/scanner").rename(root / "extra/Scanner")

    message = _refused(registry2, tmp_path, _bundle(tmp_path, edit=misname))
    assert ARCHIVE in message and "packages/alpha/extra/Scanner" in message


def test_an_invalid_short_tag_is_refused(registry2: Any, tmp_path: Path) -> None:
    def retag(root: Path) -> None:
        index = root / "index.json"
        doc = json.loads(index.read_text())
        doc["manifests"][0]["annotations"]["io.deckhouse.image.short_tag"] = "-bad tag"
        index.write_text(json.dumps(doc))

    message = _refused(registry2, tmp_path, _bundle(tmp_path, edit=retag))
    assert ARCHIVE in message and "'-bad tag'" in message


def test_a_layer_missing_from_the_bundle_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    manifest = json.loads(_first_manifest(tmp_path / "work/alpha/extra/scanner").read_text())
    layer = manifest["layers"][0]["digest"][7:]
    _retar(bundle / ARCHIVE, lambda name, data: None if name.endswith(layer) else data)
    message = _refused(registry2, tmp_path, bundle)
    assert ARCHIVE in message and f"sha256:{layer}" in message and "is missing" in message


# -- bounded memory, disk and time ----------------------------------------------------------------


def _tar_bytes(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(data.get(info.name, b"")))
    return raw.getvalue()


def test_a_compressed_archive_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    archive = bundle / ARCHIVE
    archive.write_bytes(gzip.compress(archive.read_bytes()))
    _reseal(archive)
    message = _refused(registry2, tmp_path, bundle)
    assert ARCHIVE in message and "gzip-compressed" in message


def _sparse_tar(tmp_path: Path, archive: Path, name: str, under: str = "") -> Path:
    """A GNU tar (made by GNU tar) of one 64 MiB file that is all hole but its last bytes."""
    with (tmp_path / name).open("wb") as handle:
        handle.seek(64 << 20)
        handle.write(b"end")
    subprocess.run(
        [
            "tar",
            "--sparse",
            "--format=gnu",
            "-cf",
            str(archive),
            "-C",
            str(tmp_path),
            "--transform",
            f"s,^,{under},",
            name,
        ],
        check=True,
    )
    return archive


def test_a_sparse_entry_is_refused_and_nothing_expands(registry2: Any, tmp_path: Path) -> None:
    """A GNU sparse entry claims far more bytes than the archive holds."""
    bundle = _bundle(tmp_path)
    archive = _sparse_tar(
        tmp_path, bundle / "package-sparse.tar", "sparse.img", under="packages/sparse/"
    )
    assert archive.stat().st_size < 1 << 20
    message = _refused(registry2, tmp_path, bundle)
    assert "package-sparse.tar" in message and "sparse" in message
    assert not list((tmp_path / "t").rglob("sparse.img"))


def test_an_oversized_index_json_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    huge = b'{"manifests": [], "pad": "' + b"x" * MAX_INDEX_BYTES + b'"}'
    info = tarfile.TarInfo("packages/alpha/index.json")
    info.size = len(huge)
    (bundle / "package-zz.tar").write_bytes(_tar_bytes([info], {info.name: huge}))
    message = _refused(registry2, tmp_path, bundle)
    assert "package-zz.tar" in message and "packages/alpha/index.json" in message


def test_an_archive_with_too_many_entries_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    entries = []
    for number in range(MAX_ARCHIVE_ENTRIES + 1):
        info = tarfile.TarInfo(f"packages/many/d{number}")
        info.type = tarfile.DIRTYPE
        entries.append(info)
    (bundle / "package-many.tar").write_bytes(_tar_bytes(entries, {}))
    message = _refused(registry2, tmp_path, bundle)
    assert "package-many.tar" in message and f"more than {MAX_ARCHIVE_ENTRIES}" in message


# -- hostile local files --------------------------------------------------------------------------


def test_a_symlinked_archive_is_refused_not_ignored(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _bundle(elsewhere, name="beta")
    (bundle / "package-beta.tar").symlink_to(elsewhere / "bundle" / "package-beta.tar")
    message = _refused(registry2, tmp_path, bundle)
    assert "package-beta.tar is a symlink" in message


def test_a_chunk_symlinked_out_of_the_bundle_is_refused(registry2: Any, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, chunk_size=8192)
    chunk = bundle / f"{ARCHIVE}.0001.chunk"
    outside = tmp_path / "outside.chunk"
    chunk.rename(outside)
    chunk.symlink_to(outside)
    message = _refused(registry2, tmp_path, bundle)
    assert f"{ARCHIVE}.0001.chunk is a symlink" in message


def test_a_symlinked_tmp_is_refused_and_what_it_points_to_survives(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    victim = tmp_path / "victim"
    (victim / "mirror/push/unified").mkdir(parents=True)
    (victim / "mirror/push/unified/precious").write_text("keep me")
    (bundle / ".tmp").symlink_to(victim)
    workdir = WorkDir(default_tmp_dir(bundle, discover_archives(bundle)))
    with pytest.raises(BundleError, match=r"\.tmp is a symlink"):
        workdir.prepare()
    assert (victim / "mirror/push/unified/precious").read_text() == "keep me"


def test_a_read_only_bundle_dir_gives_a_named_error(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    try:
        subprocess.run(
            ["mount", "--bind", str(bundle), str(bundle)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(bundle)], check=True, capture_output=True
        )
        workdir = WorkDir(default_tmp_dir(bundle, discover_archives(bundle)))
        with pytest.raises(
            BundleError,
            match=r"cannot create push's working directory .*"
            r"--tmp-dir",
        ):
            workdir.prepare()
    finally:
        subprocess.run(["umount", str(bundle)], check=False)


def test_a_non_utf8_bundle_path_gives_a_named_error(tmp_path: Path) -> None:
    from app.commands.push import parameters
    from app.main import build_parser

    bundle = os.fsdecode(os.fsencode(tmp_path) + b"/bundle-\xff")
    args = build_parser().parse_args(["push", bundle, "127.0.0.1:9/x/ee", "--insecure"])
    with pytest.raises(ConfigError, match=r"bundle-\\xff is not valid UTF-8"):
        parameters(args)


def test_the_warm_up_puts_no_blob_of_a_refused_bundle(registry2: Any, tmp_path: Path) -> None:
    def tamper(root: Path) -> None:
        manifest = _first_manifest(root / "version")
        manifest.write_bytes(manifest.read_bytes() + b"\n")

    bundle = _bundle(tmp_path, edit=tamper)
    registry2.clear_requests()
    with RegistryClient(registry2.host, tls=TLSOptions(insecure=True)) as client:
        warmer = PushWarmer(
            client,
            discover_archives(bundle),
            parse_target(f"{registry2.host}/checks-{next(_ns)}/ee"),
            Router.from_suffixes(),
            bundle / ".tmp" / "mirror" / "warmup",
        )
        assert warmer.start().join(timeout=120) == 0
        warmer.close()
    assert registry2.requests() == []


def test_flow_refuses_before_the_write_check(
    prefect_server: None, registry2: Any, tmp_path: Path
) -> None:
    """The Prefect flow runs the checks first: not even d8WriteCheck reaches the target."""
    from flows.push import run_push
    from tasks.push_models import PushParameters

    bundle = _bundle(tmp_path, chunk_size=8192)
    last = sorted(bundle.glob("*.chunk"))[-1]
    last.unlink()
    last.with_name(last.name + SHA256_SUFFIX).unlink()
    registry2.clear_requests()
    with pytest.raises(BundleError, match=rf"{ARCHIVE}: .*truncated"):
        run_push(
            PushParameters(
                bundle_dir=str(bundle),
                insecure=True,
                registry=f"{registry2.host}/checks-{next(_ns)}/ee",
            )
        )
    assert registry2.requests() == []


def test_unpack_refuses_a_sparse_entry_and_writes_nothing(tmp_path: Path) -> None:
    archive = _sparse_tar(tmp_path, tmp_path / "package-holes.tar", "holes.img")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveEntryError, match=r"package-holes\.tar.*sparse"):
        safe_unpack(archive, dest, on_index_collision=lambda existing, incoming: None)
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) == 0


def test_the_unpack_caps_an_index_json_it_merges(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    huge = b'{"manifests": [], "pad": "' + b"x" * MAX_INDEX_BYTES + b'"}'
    info = tarfile.TarInfo("packages/alpha/index.json")
    info.size = len(huge)
    (bundle / "package-zz.tar").write_bytes(_tar_bytes([info], {info.name: huge}))
    result = unpack_all(discover_archives(bundle), tmp_path / "unified")
    assert [name for name, _ in result.failed] == ["package-zz.tar"]
    assert "larger than" in result.failed[0][1]


def test_index_json_files_together_are_capped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Many index files just under the per-file cap do not add up to unbounded memory."""
    from d8mirror.push import validate

    bundle = _bundle(tmp_path)
    monkeypatch.setattr(validate, "MAX_TOTAL_INDEX_BYTES", 1024)
    message = _refused_offline(bundle)
    assert ARCHIVE in message and "together exceed 1024 bytes" in message


def _refused_offline(bundle: Path) -> str:
    from d8mirror.push.validate import refuse_invalid

    with pytest.raises(BundleError) as info:
        refuse_invalid(discover_archives(bundle))
    return str(info.value)
