"""OCI image layouts: writes, aliases, completeness, hostile input, merge and push precedence."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d8mirror.blobstore import BlobStore
from d8mirror.errors import InvalidReferenceError, LayoutError
from d8mirror.layout import IndexEntry, Layout, alias_ref_name
from d8mirror.mediatypes import (
    ANNOTATION_REF_NAME,
    ANNOTATION_SHORT_TAG,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR_GZIP,
    OCI_MANIFEST,
)
from d8mirror.push.index_merge import PROVENANCE_FILE, Provenance, merge_index, merge_index_into
from d8mirror.push.short_tags import resolve_short_tags

REPO = "localhost:5000/deckhouse/ee/packages/console/version"


def image(store: BlobStore, seed: str) -> tuple[str, int, list[str]]:
    """A tiny image in the store: (manifest digest, manifest size, full blob closure)."""
    config = store.put_bytes(json.dumps({"seed": seed}).encode())
    layer = store.put_bytes(f"layer of {seed}".encode())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config,
                "size": store.path(config).stat().st_size,
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER_TAR_GZIP,
                    "digest": layer,
                    "size": store.path(layer).stat().st_size,
                }
            ],
        }
    ).encode()
    digest = store.put_bytes(manifest)
    return digest, len(manifest), [digest, config, layer]


def add(layout: Layout, store: BlobStore, seed: str, tag: str, repo: str = REPO) -> str:
    digest, size, blobs = image(store, seed)
    layout.add_manifest(
        digest=digest,
        media_type=OCI_MANIFEST,
        size=size,
        short_tag=tag,
        ref_name=f"{repo}:{tag}",
        blobs=blobs,
        store=store,
    )
    return digest


def entry(digest_seed: str, tag: str | None, ref: str | None = None) -> dict[str, Any]:
    annotations = {}
    if tag is not None:
        annotations[ANNOTATION_SHORT_TAG] = tag
    if ref is not None or tag is not None:
        annotations[ANNOTATION_REF_NAME] = ref if ref is not None else f"{REPO}:{tag}"
    return {
        "mediaType": OCI_MANIFEST,
        "size": 10,
        "annotations": annotations,
        "digest": "sha256:" + hashlib.sha256(digest_seed.encode()).hexdigest(),
    }


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


# -- create / open -------------------------------------------------------------------------------
def test_create_writes_a_fresh_layout(tmp_path: Path) -> None:
    layout = Layout.create(tmp_path / "l")
    assert json.loads((tmp_path / "l" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    assert json.loads((tmp_path / "l" / "index.json").read_text()) == {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
    }
    assert (tmp_path / "l" / "blobs" / "sha256").is_dir()
    assert not layout.has_images() and layout.entries() == []


def test_open_refuses_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=re.escape(str(tmp_path))):
        Layout.open(tmp_path)
    Layout.create(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(LayoutError, match=r"index\.json"):
        Layout.open(tmp_path)


def test_open_or_create_keeps_existing_entries(tmp_path: Path, store: BlobStore) -> None:
    add(Layout.open_or_create(tmp_path / "l"), store, "a", "v1.0.0")
    assert [e.short_tag for e in Layout.open_or_create(tmp_path / "l").entries()] == ["v1.0.0"]


# -- add_manifest --------------------------------------------------------------------------------
def test_add_links_blobs_then_records_descriptor(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    digest, size, blobs = image(store, "a")
    assert layout.add_manifest(
        digest=digest,
        media_type=OCI_MANIFEST,
        size=size,
        short_tag="v1.2.3",
        ref_name=f"{REPO}:v1.2.3",
        blobs=blobs,
        store=store,
    )
    for blob in blobs:
        assert layout.blob_path(blob).read_bytes() == store.path(blob).read_bytes()
    (found,) = layout.entries()
    assert (found.digest, found.size, found.short_tag, found.ref_name) == (
        digest,
        size,
        "v1.2.3",
        f"{REPO}:v1.2.3",
    )
    assert layout.has_images()
    assert layout.verify() == []


def test_add_is_idempotent_per_tag_and_digest(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    digest, size, blobs = image(store, "a")
    kwargs: dict[str, Any] = dict(
        digest=digest,
        media_type=OCI_MANIFEST,
        size=size,
        short_tag="stable",
        ref_name=f"{REPO}:stable",
        blobs=blobs,
        store=store,
    )
    assert layout.add_manifest(**kwargs)
    assert not layout.add_manifest(**kwargs)
    assert len(layout.entries()) == 1


def test_same_tag_new_digest_appends_and_find_gives_the_last(
    tmp_path: Path, store: BlobStore
) -> None:
    layout = Layout.create(tmp_path / "l")
    add(layout, store, "old", "stable")
    newer = add(layout, store, "new", "stable")
    assert len(layout.entries()) == 2
    found = layout.find("stable")
    assert found is not None and found.digest == newer
    assert layout.find("beta") is None


def test_failed_blob_write_is_really_redone(
    tmp_path: Path, store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR #393: a failed write must not be recorded; the retry lands the image once."""
    layout = Layout.create(tmp_path / "l")
    digest, size, blobs = image(store, "flaky")
    real = BlobStore.link_into
    failures = {blobs[2]: 1}

    def flaky(self: BlobStore, blob: str, dest: Path) -> None:
        if failures.get(blob):
            failures[blob] -= 1
            raise OSError(5, "I/O error")
        real(self, blob, dest)

    monkeypatch.setattr(BlobStore, "link_into", flaky)
    kwargs: dict[str, Any] = dict(
        digest=digest,
        media_type=OCI_MANIFEST,
        size=size,
        short_tag="v1.0.0",
        ref_name=f"{REPO}:v1.0.0",
        blobs=blobs,
        store=store,
    )
    with pytest.raises(OSError):
        layout.add_manifest(**kwargs)
    assert layout.entries() == []
    assert layout.add_manifest(**kwargs)
    assert len(layout.entries()) == 1
    assert layout.verify() == []


def test_add_refuses_invalid_short_tag(tmp_path: Path, store: BlobStore) -> None:
    digest, size, blobs = image(store, "a")
    with pytest.raises(InvalidReferenceError):
        Layout.create(tmp_path).add_manifest(
            digest=digest,
            media_type=OCI_MANIFEST,
            size=size,
            short_tag="../x",
            ref_name="r",
            blobs=blobs,
            store=store,
        )


def test_concurrent_adds_to_one_layout_all_land(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    images = [image(store, f"img{i}") for i in range(16)]
    twin = Layout(tmp_path / "l")  # a second object on the same path shares the lock

    def worker(i: int) -> None:
        digest, size, blobs = images[i]
        target = layout if i % 2 else twin
        target.add_manifest(
            digest=digest,
            media_type=OCI_MANIFEST,
            size=size,
            short_tag=f"v1.0.{i}",
            ref_name=f"{REPO}:v1.0.{i}",
            blobs=blobs,
            store=store,
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.short_tag or "" for e in layout.entries()) == sorted(
        f"v1.0.{i}" for i in range(16)
    )


def test_a_filesystem_that_cannot_lock_a_directory_still_takes_writes(
    tmp_path: Path, store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    def no_directory_locks(fd: int, operation: int) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")  # e.g. NFS: read-only fd

    monkeypatch.setattr(fcntl, "flock", no_directory_locks)
    layout = Layout.create(tmp_path / "l")
    digest, size, blobs = image(store, "nfs")
    assert layout.add_manifest(
        digest=digest,
        media_type=OCI_MANIFEST,
        size=size,
        short_tag="v1.0.0",
        ref_name=f"{REPO}:v1.0.0",
        blobs=blobs,
        store=store,
    )
    assert [e.short_tag for e in layout.entries()] == ["v1.0.0"]


# -- aliases, sort, completeness -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("localhost:5000/a/b/version:v1.2.3", "localhost:5000/a/b/version:stable"),
        ("registry.example.com/a/b:v1", "registry.example.com/a/b:stable"),
        ("localhost:5000/a/b", "localhost:5000/a/b:stable"),
        ("localhost:5000/a/b@sha256:" + "a" * 64, "localhost:5000/a/b:stable"),
        ("h:1/a:v1@sha256:" + "b" * 64, "h:1/a:stable"),
        ("name:v1", "name:stable"),
    ],
)
def test_alias_ref_name_keeps_host_port(ref: str, expected: str) -> None:
    assert alias_ref_name(ref, "stable") == expected


def test_retag_appends_an_alias_once(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    pinned = add(layout, store, "pin", "v1.2.3")
    source = layout.find("v1.2.3")
    assert source is not None
    ref = alias_ref_name(source.ref_name or "", "stable")
    assert layout.retag(pinned, "stable", ref)
    assert not layout.retag(pinned, "stable", ref)
    alias = layout.find("stable")
    assert alias is not None
    assert (alias.digest, alias.size, alias.media_type) == (pinned, source.size, OCI_MANIFEST)
    assert alias.ref_name == f"{REPO}:stable"
    assert [e.short_tag for e in layout.entries()] == ["v1.2.3", "stable"]
    with pytest.raises(LayoutError, match="no descriptor"):
        layout.retag("sha256:" + "0" * 64, "beta", "x:beta")


def test_sort_orders_by_ref_name_stably_with_indentation(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    for tag in ["v1.0.2", "alpha", "v1.0.10", "beta"]:
        add(layout, store, tag, tag)
    add(layout, store, "other", "alpha")  # same ref name, later: stays after the first
    first_alpha = layout.entries()[1].digest
    layout.sort()
    refs = [e.ref_name or "" for e in layout.entries()]
    assert refs == sorted(refs)
    alphas = [e.digest for e in layout.entries() if e.short_tag == "alpha"]
    assert alphas[0] == first_alpha
    assert '\n  "manifests": [' in (tmp_path / "l" / "index.json").read_text()


def test_missing_reports_planned_tags_absent_from_the_layout(
    tmp_path: Path, store: BlobStore
) -> None:
    layout = Layout.create(tmp_path / "l")
    add(layout, store, "a", "v1.0.0")
    assert layout.missing(["v1.0.0", "v2.0.0", "alpha"]) == ["alpha", "v2.0.0"]
    assert layout.missing(["v1.0.0"]) == []


# -- hostile input, closure, verify --------------------------------------------------------------
@pytest.mark.parametrize(
    "digest", ["sha256:../../etc", "sha512:" + "a" * 128, "sha256:" + "A" * 64, 42]
)
def test_hostile_index_json_is_refused(tmp_path: Path, digest: object) -> None:
    Layout.create(tmp_path)
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [{"mediaType": OCI_MANIFEST, "size": 1, "digest": digest}],
            }
        )
    )
    with pytest.raises(LayoutError, match="digest"):
        Layout.open(tmp_path)
    with pytest.raises(LayoutError):
        Layout(tmp_path).blob_path(str(digest))


def test_closure_lists_every_blob_of_an_index(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    child, child_size, child_blobs = image(store, "amd64")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_size}],
        }
    ).encode()
    index_digest = store.put_bytes(index)
    layout.add_manifest(
        digest=index_digest,
        media_type=OCI_INDEX,
        size=len(index),
        short_tag="v1",
        ref_name=f"{REPO}:v1",
        blobs=child_blobs,
        store=store,
    )
    closure = layout.closure(index_digest)
    assert [d for d, _ in closure] == [index_digest, *child_blobs]
    assert closure[0][1] == len(index) and closure[1][1] == child_size
    assert layout.closure(index_digest) == closure


def test_verify_reports_missing_corrupt_and_untagged(tmp_path: Path, store: BlobStore) -> None:
    layout = Layout.create(tmp_path / "l")
    add(layout, store, "a", "v1")
    _, _, blobs = image(store, "a")
    layout.blob_path(blobs[1]).unlink()  # config gone
    layout.blob_path(blobs[2]).unlink()
    layout.blob_path(blobs[2]).write_bytes(b"tampered")
    doc = json.loads(layout.index_path.read_text())
    untagged = dict(doc["manifests"][0], annotations={})
    doc["manifests"].append(untagged)
    layout.index_path.write_text(json.dumps(doc))
    problems = layout.verify()
    assert any("missing" in p and blobs[1] in p for p in problems)
    assert any("corrupt" in p and blobs[2] in p for p in problems)
    assert any("no io.deckhouse.image.short_tag" in p for p in problems)


def test_index_entry_round_trips_unknown_fields() -> None:
    raw = dict(entry("a", "v1"), platform={"architecture": "", "os": ""}, artifactType="x/y")
    parsed = IndexEntry.from_json(raw)
    assert parsed.extra == {"platform": {"architecture": "", "os": ""}, "artifactType": "x/y"}
    assert parsed.to_json() == raw


# -- merge ---------------------------------------------------------------------------------------
def test_merge_unions_dedupes_and_sorts() -> None:
    full = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry("s", "stable"), entry("a", "alpha"), entry("v1", "v1.0.0")],
    }
    subset = {"manifests": [entry("a", "alpha"), entry("b", "beta")]}
    merged = merge_index(subset, full)
    tags = [m["annotations"][ANNOTATION_SHORT_TAG] for m in merged["manifests"]]
    assert tags == ["alpha", "beta", "stable", "v1.0.0"]
    assert merged["schemaVersion"] == 2 and merged["mediaType"] == OCI_INDEX


def test_merge_keeps_both_digests_for_one_tag_existing_first() -> None:
    merged = merge_index(
        {"manifests": [entry("pin", "stable")]}, {"manifests": [entry("upstream", "stable")]}
    )
    assert [m["digest"] for m in merged["manifests"]] == [
        entry("pin", "stable")["digest"],
        entry("upstream", "stable")["digest"],
    ]


@pytest.mark.parametrize("bad", [{"manifests": "nope"}, {"manifests": [{"digest": "x"}]}, []])
def test_merge_rejects_invalid_input(bad: Any) -> None:
    with pytest.raises(LayoutError):
        merge_index({"manifests": []}, bad)
    with pytest.raises(LayoutError):
        merge_index(bad, {"manifests": []})


entries_st = st.lists(
    st.builds(entry, st.sampled_from("abcdef"), st.sampled_from(["alpha", "beta", "stable", "v1"])),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(entries_st, entries_st)
def test_merge_properties(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    a, b = {"manifests": old}, {"manifests": new}
    merged = merge_index(a, b)
    keys = {(m["digest"], m["annotations"][ANNOTATION_REF_NAME]) for m in merged["manifests"]}
    inputs = {(m["digest"], m["annotations"][ANNOTATION_REF_NAME]) for m in old + new}
    assert keys == inputs  # union, nothing lost
    assert len(keys) == len(merged["manifests"])  # deduped
    assert merge_index(merged, b) == merged  # idempotent
    assert merge_index(a, b) == merged  # deterministic
    refs = [m["annotations"][ANNOTATION_REF_NAME] for m in merged["manifests"]]
    assert refs == sorted(refs)


# -- push precedence (Q2) -----------------------------------------------------------------
def entries_of(*raw: dict[str, Any]) -> list[IndexEntry]:
    return [IndexEntry.from_json(r) for r in raw]


def test_resolve_last_wins_and_skips_untagged() -> None:
    resolved = resolve_short_tags(
        entries_of(entry("a", "stable"), entry("b", "stable"), entry("c", None), entry("d", "v1"))
    )
    assert list(resolved) == ["stable", "v1"]
    assert resolved["stable"].digest == entry("b", "stable")["digest"]
    (conflict,) = resolved.conflicts
    assert conflict.short_tag == "stable" and not conflict.by_preference
    assert conflict.chosen == entry("b", "stable")["digest"]
    assert [e.digest for e in resolved.untagged] == [entry("c", None)["digest"]]


def test_resolve_identical_digests_is_no_conflict() -> None:
    resolved = resolve_short_tags(entries_of(entry("a", "stable"), entry("a", "stable", "x:s")))
    assert resolved.conflicts == ()


def test_resolve_prefers_pinned_descriptor() -> None:
    pin, upstream = entry("pin", "stable"), entry("upstream", "stable")
    resolved = resolve_short_tags(
        entries_of(pin, upstream), preferred=lambda e: e.digest == pin["digest"]
    )
    assert resolved["stable"].digest == pin["digest"]
    assert resolved.conflicts[0].by_preference
    assert "pushing" in resolved.conflicts[0].describe()


def test_pin_from_package_archive_beats_package_versions(tmp_path: Path) -> None:
    """Unpack package-console.tar then package-versions.tar (sorted order) into one tree."""
    layout_dir = tmp_path / "unified" / "packages" / "console" / "version"
    pinned = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry("pin", "v1.2.3"), entry("pin", "stable")],
    }
    upstream = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry("pin", "v1.2.3"),
            entry("upstream", "stable"),
            entry("up-beta", "beta"),
        ],
    }
    merge_index_into(layout_dir, pinned, source="package-console.tar")
    merge_index_into(layout_dir, upstream, source="package-versions.tar")
    assert (layout_dir / "index.json").stat().st_mode & 0o777 == 0o600
    assert (layout_dir / PROVENANCE_FILE).is_file()
    entries = Layout(layout_dir).entries()
    assert resolve_short_tags(entries)["stable"].digest == entry("upstream", "stable")["digest"]
    provenance = Provenance.load(layout_dir)
    resolved = resolve_short_tags(entries, preferred=provenance.from_item_archive)
    assert resolved["stable"].digest == entry("pin", "stable")["digest"]
    assert resolved["beta"].digest == entry("up-beta", "beta")["digest"]
    assert [c.short_tag for c in resolved.conflicts] == ["stable"]
    v123 = resolved["v1.2.3"]
    assert provenance.archives(v123) == ["package-console.tar", "package-versions.tar"]


def test_merge_index_into_rejects_invalid_archive_index(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"package-x\.tar"):
        merge_index_into(
            tmp_path, {"manifests": [{"digest": "sha256:../../etc"}]}, source="package-x.tar"
        )
    assert not (tmp_path / "index.json").exists()


@pytest.mark.parametrize(
    "mutate",
    [
        {"size": -1},
        {"size": True},
        {"size": "10"},
        {"mediaType": ""},
        {"annotations": {"k": 1}},
        {"annotations": ["x"]},
    ],
)
def test_malformed_descriptor_fields_are_refused(mutate: dict[str, Any]) -> None:
    with pytest.raises(LayoutError):
        IndexEntry.from_json(dict(entry("a", "v1"), **mutate))


def test_provenance_sidecar_absent_or_malformed(tmp_path: Path) -> None:
    assert Provenance.load(tmp_path).sources == {}
    (tmp_path / PROVENANCE_FILE).write_text('{"entries": [1]}')
    with pytest.raises(LayoutError, match="provenance"):
        Provenance.load(tmp_path)
