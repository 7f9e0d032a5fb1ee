"""Push uploads large blobs of plain tar archives straight from the archive: the unified tree
never holds them (their spans are recorded instead); chunk sets are still extracted; a byte
range of a file uploads exactly those bytes (single PUT and chunked PATCH)."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import (
    SOURCE,
    Expected,
    HandLayout,
    PackageSpec,
    build_bundle,
    build_package_layouts,
    digest_of,
    make_layer,
    pack_package,
    pack_versions,
    pseudo_random,
)
from push_stages import prepare, push_prepared

from d8mirror.bundle import SPAN_THRESHOLD, BlobSpans, TarSource, discover_archives, pack_archive
from d8mirror.bundle.unpack import safe_unpack
from d8mirror.errors import (
    BundleError,
    ConfigError,
    DigestMismatchError,
    IntegrityError,
    LayoutError,
    RegistryError,
    UnsafeArchiveEntryError,
)
from d8mirror.layout import Layout
from d8mirror.mediatypes import OCI_CONFIG, OCI_LAYER_TAR_GZIP, OCI_MANIFEST
from d8mirror.push import tinyimage
from d8mirror.push.blobsource import LayoutBlobs
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.summary import render_push_summary
from d8mirror.push.unified import SPANS_FILE, load_spans, tree_size, unpack_all

_ns = itertools.count()
BIG = SPAN_THRESHOLD + (1 << 20)  # a layer of incompressible bytes above the threshold


def _big_spec(name: str = "console") -> PackageSpec:
    return PackageSpec(name, versions=("v1.0.0",), channels={"stable": "v1.0.0"}, layer_size=BIG)


def _big_layer(name: str = "console", version: str = "v1.0.0") -> bytes:
    """The layer ``build_package_layouts`` makes for ``_big_spec``'s release image."""
    return make_layer({"app": pseudo_random(f"{name}/{version}", BIG)})


def _target(server: Any, name: str) -> str:
    return f"{server.host}/{name}-{next(_ns)}/ee"


def _assert_target_has(server: Any, target: str, expected: Expected) -> None:
    root = parse_target(target).path
    discovery = tinyimage.build(DISCOVERY_LABEL).digest
    with server.client() as client:
        for (repo, tag), digest in sorted(expected.tags.items()):
            assert client.head_manifest(f"{root}/{repo}", tag).digest == (digest or discovery)


def _pulled_sha256(server: Any, repository: str, digest: str, dest: Path) -> str:
    with server.client() as client:
        client.fetch_blob(repository, digest, dest)
    return "sha256:" + hashlib.sha256(dest.read_bytes()).hexdigest()


def _files_above_threshold(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size > SPAN_THRESHOLD]


# -- unpack: spans instead of files ------------------------------------------------------------


def test_large_blob_of_a_plain_tar_is_recorded_not_written(tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, [_big_spec()])
    layer = _big_layer()
    digest = digest_of(layer)
    unified = tmp_path / "unified"
    result = unpack_all(discover_archives(bundle), unified)
    assert not (unified / "packages/console/blobs/sha256" / digest[7:]).exists()
    assert _files_above_threshold(unified) == []
    spans = load_spans(unified)
    span = spans.find("packages/console", digest)
    assert span is not None and span.size == len(layer)
    assert span.archive == (bundle / "package-console.tar").resolve()
    with span.archive.open("rb") as archive:
        archive.seek(span.offset)
        assert archive.read(span.size) == layer
    assert len(spans) == 1  # manifests, configs, small layers: extracted as before
    assert (unified / SPANS_FILE).is_file()
    assert result.bytes_in_archives == len(layer)
    assert result.bytes_written == tree_size(unified) < len(layer)


def test_chunk_set_is_extracted_whole(tmp_path: Path) -> None:
    expected = Expected()
    root = build_package_layouts(tmp_path / "work", _big_spec(), expected)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pack_package(bundle, root, "console", chunk_size=1 << 20)
    assert not (bundle / "package-console.tar").exists()
    unified = tmp_path / "unified"
    result = unpack_all(discover_archives(bundle), unified)
    layer = _big_layer()
    assert (unified / "packages/console/blobs/sha256" / digest_of(layer)[7:]).read_bytes() == layer
    assert len(load_spans(unified)) == 0 and result.bytes_in_archives == 0


def _tar(path: Path, entries: list[tuple[str, bytes]], *, compress: bool = False) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()) if compress else raw.getvalue())
    return path


def _no_collision(existing: Path, incoming: Path) -> None:
    raise AssertionError("no index.json here")


BLOB = os.urandom(SPAN_THRESHOLD + 1)
HEX = hashlib.sha256(BLOB).hexdigest()


@pytest.mark.parametrize(
    "name",
    [
        f"l/blobs/sha256/{HEX.upper()}",
        f"l/blobs/sha256/{HEX}0",
        f"l/blobs/sha512/{HEX}",
        f"l/blobs/{HEX}",
        "l/layer.tar",
    ],
)
def test_only_sha256_blob_names_stay_in_the_archive(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "a.tar", [(name, BLOB)])
    spans = BlobSpans()
    safe_unpack(archive, tmp_path / "d", on_index_collision=_no_collision, blob_spans=spans)
    assert len(spans) == 0
    assert (tmp_path / "d" / name).read_bytes() == BLOB


def test_small_blobs_are_extracted_and_compressed_tars_refused(tmp_path: Path) -> None:
    small = b"x" * SPAN_THRESHOLD
    entries = [
        (f"l/blobs/sha256/{hashlib.sha256(small).hexdigest()}", small),
        (f"l/blobs/sha256/{HEX}", BLOB),
    ]
    spans = BlobSpans()
    archive = _tar(tmp_path / "a.tar", entries, compress=True)
    with pytest.raises(BundleError, match=r"a\.tar"):
        safe_unpack(archive, tmp_path / "d", on_index_collision=_no_collision, blob_spans=spans)
    assert len(spans) == 0 and not (tmp_path / "d" / entries[1][0]).exists()
    plain = _tar(tmp_path / "b.tar", entries)
    names = safe_unpack(plain, tmp_path / "e", on_index_collision=_no_collision, blob_spans=spans)
    assert names == [name for name, _ in entries]  # spans are reported like extracted files
    assert (tmp_path / "e" / entries[0][0]).read_bytes() == small
    assert not (tmp_path / "e" / entries[1][0]).exists()
    assert list(spans) == [entries[1][0]]


@pytest.mark.parametrize("name", [f"../blobs/sha256/{HEX}", f"/abs/blobs/sha256/{HEX}"])
def test_unsafe_blob_entries_are_refused_as_before(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "evil.tar", [(name, BLOB)])
    spans = BlobSpans()
    with pytest.raises(UnsafeArchiveEntryError, match=r"evil\.tar"):
        safe_unpack(
            archive, tmp_path / "out" / "d", on_index_collision=_no_collision, blob_spans=spans
        )
    assert len(spans) == 0


def test_truncated_blob_entry_records_no_span(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [(f"l/blobs/sha256/{HEX}", BLOB)])
    with archive.open("r+b") as f:
        f.truncate(len(BLOB) // 2)
    spans = BlobSpans()
    with pytest.raises(BundleError, match="truncated or corrupt"):
        safe_unpack(archive, tmp_path / "d", on_index_collision=_no_collision, blob_spans=spans)
    assert len(spans) == 0


def test_the_last_entry_for_a_path_wins_file_or_span(tmp_path: Path) -> None:
    name = f"l/blobs/sha256/{HEX}"
    plain = _tar(tmp_path / "a.tar", [(name, BLOB)])
    source = tmp_path / "src"
    (source / "blobs/sha256").mkdir(parents=True)
    (source / "blobs/sha256" / HEX).write_bytes(BLOB)
    chunked = pack_archive(tmp_path / "c.tar", [TarSource(source, "l")], chunk_size=1 << 20)
    assert chunked.path == tmp_path / "c.tar" and not chunked.path.exists()
    dest, spans = tmp_path / "d", BlobSpans()
    safe_unpack(plain, dest, on_index_collision=_no_collision, blob_spans=spans)
    assert list(spans) == [name] and not (dest / name).exists()
    safe_unpack(chunked.path, dest, on_index_collision=_no_collision, blob_spans=spans)
    assert len(spans) == 0 and (dest / name).read_bytes() == BLOB
    safe_unpack(plain, dest, on_index_collision=_no_collision, blob_spans=spans)
    assert list(spans) == [name] and not (dest / name).exists()


def test_a_span_read_as_a_manifest_is_capped(tmp_path: Path) -> None:
    name = f"l/blobs/sha256/{HEX}"
    archive = _tar(tmp_path / "a.tar", [(name, BLOB)])
    spans = BlobSpans()
    safe_unpack(archive, tmp_path / "d", on_index_collision=_no_collision, blob_spans=spans)
    blobs = LayoutBlobs(Layout(tmp_path / "d" / "l"), "l", spans)
    assert blobs.read(f"sha256:{HEX}", limit=len(BLOB)) == BLOB
    with pytest.raises(IntegrityError, match="larger than"):
        blobs.read(f"sha256:{HEX}", limit=len(BLOB) - 1)
    with pytest.raises(LayoutError, match="lacks blob"):
        blobs.read(digest_of(b"absent"), limit=len(BLOB))


# -- push: from the archive, end to end --------------------------------------------------------


def test_push_uploads_a_large_blob_from_the_archive(registry2: Any, tmp_path: Path) -> None:
    bundle, expected = build_bundle(tmp_path, [_big_spec()])
    layer = _big_layer()
    digest = digest_of(layer)
    target = _target(registry2, "span")
    tree = prepare(
        discover_archives(bundle), tmp_path / "t", parse_target(target), Router.from_suffixes()
    )
    unified = tree.unified
    registry2.clear_requests()
    with registry2.client() as client:
        result = push_prepared(client, tree, parse_target(target), Router.from_suffixes())
    assert result.ok, render_push_summary(result)
    assert _files_above_threshold(unified) == []  # pushing wrote nothing into the tree either
    _assert_target_has(registry2, target, expected)
    repository = f"{parse_target(target).path}/packages/console"
    assert registry2.count("PUT", digest[7:]) == 1
    assert _pulled_sha256(registry2, repository, digest, tmp_path / "pulled") == digest
    assert (tmp_path / "pulled").read_bytes() == layer


def test_a_manifest_left_in_the_archive_is_read_from_it(registry2: Any, tmp_path: Path) -> None:
    """A manifest above the threshold (below the 4 MiB cap) stays in the archive too."""
    root = tmp_path / "work" / "huge"
    layout = HandLayout(root)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = make_layer({"app": b"small"})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": layout.blob(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_TAR_GZIP, "digest": layout.blob(layer), "size": len(layer)}
            ],
            "annotations": {"org.example.padding": "p" * (SPAN_THRESHOLD + 1000)},
        }
    ).encode()
    digest = layout.blob(manifest)
    layout.add(digest, OCI_MANIFEST, len(manifest), "v1.0.0", f"{SOURCE}/packages/huge:v1.0.0")
    layout.write()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pack_package(bundle, root, "huge")
    target = _target(registry2, "huge-manifest")
    tree = prepare(
        discover_archives(bundle), tmp_path / "t", parse_target(target), Router.from_suffixes()
    )
    assert load_spans(tree.unified).find("packages/huge", digest) is not None
    with registry2.client() as client:
        result = push_prepared(client, tree, parse_target(target), Router.from_suffixes())
        assert result.ok, render_push_summary(result)
        pushed = client.get_manifest(f"{parse_target(target).path}/packages/huge", "v1.0.0")
    assert pushed.digest == digest and pushed.data == manifest


def test_push_of_a_chunk_set_with_a_large_blob(registry2: Any, tmp_path: Path) -> None:
    expected = Expected()
    root = build_package_layouts(tmp_path / "work", _big_spec(), expected)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pack_package(bundle, root, "console", chunk_size=3 << 20)
    pack_versions(bundle, {"console": root})
    expected.tags[("packages", "console")] = ""
    target = _target(registry2, "chunks")
    tree = prepare(
        discover_archives(bundle), tmp_path / "t", parse_target(target), Router.from_suffixes()
    )
    with registry2.client() as client:
        result = push_prepared(client, tree, parse_target(target), Router.from_suffixes())
    assert result.ok, render_push_summary(result)
    _assert_target_has(registry2, target, expected)
    digest = digest_of(_big_layer())
    repository = f"{parse_target(target).path}/packages/console"
    assert _pulled_sha256(registry2, repository, digest, tmp_path / "pulled") == digest


def test_flow_pushes_large_blobs_from_the_archive(
    prefect_server: None, registry2: Any, tmp_path: Path
) -> None:
    from flows.push import run_push
    from tasks.push import PushParameters

    bundle, expected = build_bundle(tmp_path, [_big_spec()])
    target = _target(registry2, "flow-span")
    result = run_push(PushParameters(bundle_dir=str(bundle), registry=target, insecure=True))
    assert result.ok
    assert result.unpack is not None and 0 < result.unpack.bytes_written < BIG
    _assert_target_has(registry2, target, expected)
    digest = digest_of(_big_layer())
    repository = f"{parse_target(target).path}/packages/console"
    assert _pulled_sha256(registry2, repository, digest, tmp_path / "pulled") == digest
    assert not (bundle / ".tmp").exists()


# -- registry client: a byte range of a file ---------------------------------------------------


@pytest.mark.parametrize("chunk_size", [64 << 20, 1000], ids=["monolithic", "chunked"])
def test_upload_of_a_byte_range(registry2: Any, tmp_path: Path, chunk_size: int) -> None:
    data = os.urandom(4321)
    source = tmp_path / "archive.bin"
    source.write_bytes(os.urandom(777) + data + os.urandom(555))
    digest = digest_of(data)
    repository = f"range/upload-{chunk_size}-{next(_ns)}"
    with registry2.client() as client:
        registry2.clear_requests()
        progress: list[int] = []
        client.upload_blob(
            repository,
            digest,
            source,
            offset=777,
            size=len(data),
            chunk_size=chunk_size,
            on_progress=progress.append,
        )
        assert sum(progress) == len(data)
        assert registry2.count("PATCH", "/blobs/uploads/") == (5 if chunk_size == 1000 else 0)
        client.fetch_blob(repository, digest, tmp_path / "back", size=len(data))
    assert (tmp_path / "back").read_bytes() == data


@pytest.mark.parametrize("chunk_size", [64 << 20, 1000], ids=["monolithic", "chunked"])
def test_a_range_that_does_not_hash_to_the_digest_is_refused(
    registry2: Any, tmp_path: Path, chunk_size: int
) -> None:
    data = os.urandom(3000)
    source = tmp_path / "archive.bin"
    source.write_bytes(b"\0" + data + b"\0")
    digest = digest_of(data)
    repository = f"range/wrong-{chunk_size}-{next(_ns)}"
    with registry2.client() as client:
        with pytest.raises(RegistryError):
            client.upload_blob(
                repository, digest, source, offset=0, size=len(data), chunk_size=chunk_size
            )
        assert not client.blob_exists(repository, digest)


def test_a_range_past_the_end_or_without_size_is_refused_before_any_request(
    registry2: Any, tmp_path: Path
) -> None:
    source = tmp_path / "short.bin"
    source.write_bytes(b"0123456789")
    digest = digest_of(b"56789x")
    with registry2.client() as client:
        registry2.clear_requests()
        with pytest.raises(DigestMismatchError, match="truncated"):
            client.upload_blob("range/past", digest, source, offset=5, size=6)
        with pytest.raises(ConfigError):
            client.upload_blob("range/past", digest, source, offset=5)
        with pytest.raises(ConfigError):
            client.upload_blob("range/past", digest, source, offset=-1, size=1)
    assert registry2.count("POST", "/blobs/uploads/") == 0


# -- scheduling: heaviest layouts start first ------------------------------------------------


def test_jobs_weigh_their_blobs_in_the_tree_and_in_archives(tmp_path: Path) -> None:
    from d8mirror.push.stages import heaviest_first, plan_jobs

    bundle, _ = build_bundle(tmp_path, [PackageSpec("code"), _big_spec("console")])
    unified = tmp_path / "unified"
    unpack_all(discover_archives(bundle), unified)
    jobs, warnings = plan_jobs(
        unified, parse_target("r.example/ee"), Router.from_suffixes("/packages", "/modules")
    )
    assert warnings == []
    assert [j.layout for j in jobs] == sorted(j.layout for j in jobs)  # order kept
    weights = {j.layout: j.weight for j in jobs}
    on_disk = {
        j.layout: sum(p.stat().st_size for p in (Path(j.directory) / "blobs" / "sha256").iterdir())
        for j in jobs
    }
    assert weights["packages/console"] == on_disk["packages/console"] + len(_big_layer())
    assert weights["packages/code"] == on_disk["packages/code"] > 0
    assert all(weights[k] == on_disk[k] for k in weights if k != "packages/console")
    order = [j.layout for j in heaviest_first(jobs)]
    assert order[0] == "packages/console"
    assert [weights[k] for k in order] == sorted(weights.values(), reverse=True)


def test_the_root_layout_weighs_all_its_blobs(tmp_path: Path) -> None:
    from d8mirror.push.stages import _layout_weights

    for rel, size in [
        ("blobs/sha256/a", 10),
        ("blobs/sha256/b", 5),
        ("packages/x/blobs/sha256/c", 7),
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    assert _layout_weights(tmp_path) == {"": 15, "packages/x": 7}
