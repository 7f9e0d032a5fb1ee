"""Push of a delta bundle (issue 17) against real registries.

The corpus: a base bundle (package ``console`` v1.0.0, v1.1.0) and the next state (console gains
v1.2.0 and its channels move; a new package ``viewer`` whose images share console's base layer).
The delta bundle is the next state's full bundle with every config and layer the base's push
left in the target deleted from its archives (sidecars rewritten) and ``delta.json`` naming
them, built against the receipt of the base: exactly what ``pull --delta-from`` writes.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from push_bundle_builder import PackageSpec, build_bundle
from push_stages import push_bundle
from reliability_support import tags_and_digests

from d8mirror.bundle import discover_archives
from d8mirror.bundle.checksums import sha256_line
from d8mirror.delta import Delta, OmittedBlob, read_delta, write_delta
from d8mirror.errors import BundleError, DeltaBaseMissingError, DeltaMountError, SealedFileError
from d8mirror.hashing import sha256_file_hex
from d8mirror.mediatypes import INDEX_TYPES
from d8mirror.names import SHA256_SUFFIX
from d8mirror.push.blobs import BlobLocations
from d8mirror.push.delta_base import check_delta_base, refuse_missing_base
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.stages import check_bundle, prepare_push_tree, push_layout
from d8mirror.push.unified import WorkDir
from d8mirror.receipt import HeldImage, Receipt, write_receipt
from d8mirror.verify import verify_bundle
from testbed.registry_server import RegistryServer

REPO = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "app.main")
_ns = itertools.count()

BASE = [PackageSpec("console")]
NEXT = [
    PackageSpec(
        "console",
        versions=("v1.0.0", "v1.1.0", "v1.2.0"),
        channels={"stable": "v1.1.0", "alpha": "v1.2.0"},
    ),
    PackageSpec("viewer", versions=("v2.0.0",), channels={"stable": "v2.0.0"}, extras={}),
]


# -- building the corpus -------------------------------------------------------------------------
def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive) as tar:
        return [
            (m, tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        ]


def _blob_files(bundle: Path) -> dict[str, dict[str, bytes]]:
    """layout path → {digest: bytes} of every blob file of the bundle's archives."""
    out: dict[str, dict[str, bytes]] = {}
    for archive in sorted(bundle.glob("*.tar")):
        for member, data in _members(archive):
            parts = PurePosixPath(member.name).parts
            if len(parts) >= 3 and parts[-3:-1] == ("blobs", "sha256"):
                layout = PurePosixPath(*parts[:-3]).as_posix()
                out.setdefault(layout, {})[f"sha256:{parts[-1]}"] = data
            elif parts[-1] == "index.json":
                layout = PurePosixPath(*parts[:-1]).as_posix()
                out.setdefault(layout, {})["index.json"] = data
    return out


def _used_blobs(bundle: Path) -> tuple[list[HeldImage], dict[str, int], dict[str, set[str]]]:
    """The bundle's tagged images (layout, tag, digest), its configs and layers (digest →
    size) and the layouts using each (digest → layout paths), read from its manifests."""
    images: list[HeldImage] = []
    sizes: dict[str, int] = {}
    users: dict[str, set[str]] = {}
    for layout, files in sorted(_blob_files(bundle).items()):
        for entry in json.loads(files["index.json"])["manifests"]:
            tag = entry["annotations"]["io.deckhouse.image.short_tag"]
            images.append(HeldImage(layout, tag, entry["digest"]))
            pending = [(entry["digest"], entry["mediaType"])]
            while pending:
                digest, media_type = pending.pop()
                doc = json.loads(files[digest])
                if media_type in INDEX_TYPES:
                    pending += [(d["digest"], d["mediaType"]) for d in doc["manifests"]]
                    continue
                for blob in [doc["config"], *doc["layers"]]:
                    sizes[blob["digest"]] = blob["size"]
                    users.setdefault(blob["digest"], set()).add(layout)
    return images, sizes, users


def _reseal(path: Path) -> None:
    path.with_name(path.name + SHA256_SUFFIX).write_text(
        sha256_line(sha256_file_hex(path), path.name)
    )


def _drop_blobs(archive: Path, digests: set[str]) -> None:
    """Rewrite a plain tar without the blob files of ``digests`` (in every layout)."""
    kept = [
        (m, data)
        for m, data in _members(archive)
        if not (
            "/blobs/sha256/" in f"/{m.name}" and f"sha256:{PurePosixPath(m.name).name}" in digests
        )
    ]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in kept:
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    _reseal(archive)


def make_delta(
    full: Path,
    dest: Path,
    receipt: Receipt,
    base_sha: str,
    base_usage: tuple[list[HeldImage], dict[str, int], dict[str, set[str]]],
) -> Delta:
    """``dest``: a copy of bundle ``full`` without the configs and layers ``receipt`` lists,
    with its ``delta.json`` (each omitted blob named by a repository of the base holding it)."""
    shutil.copytree(full, dest)
    _images, sizes, _users = _used_blobs(full)
    held = set(receipt.blobs)
    _base_images, _base_sizes, holders = base_usage
    omitted = [
        OmittedBlob(digest, size, sorted(holders[digest])[0])
        for digest, size in sizes.items()
        if digest in held
    ]
    for archive in dest.glob("*.tar"):
        _drop_blobs(archive, {b.digest for b in omitted})
    delta = Delta.build(base_sha, omitted)
    write_delta(dest, delta)
    return delta


@dataclass
class Corpus:
    base: Path  # the full bundle of the base state
    full: Path  # the full bundle of the next state
    delta: Path  # the delta bundle of the next state against the base's receipt
    description: Delta
    base_sha: str


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    work = tmp_path_factory.mktemp("delta-corpus")
    base, _ = build_bundle(work / "base", BASE)
    full, _ = build_bundle(work / "next", NEXT)
    usage = _used_blobs(base)
    receipt = Receipt.build("registry.site/deckhouse/ee", usage[0], usage[1])
    base_sha = write_receipt(receipt, work / "receipt.json")
    delta = make_delta(full, work / "delta", receipt, base_sha, usage)
    return Corpus(base, full, work / "delta", delta, base_sha)


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry nothing was ever pushed into (this module's own)."""
    with RegistryServer(tmp_path_factory.mktemp("delta-empty")) as server:
        yield server


def _params(bundle: Path, target: str, **more: Any) -> Any:
    from tasks.push import PushParameters

    return PushParameters(bundle_dir=str(bundle), registry=target, insecure=True, **more)


def _writes(server: RegistryServer) -> list[tuple[str, str, int]]:
    return [r for r in server.requests() if r[0] in ("PUT", "POST", "PATCH", "DELETE")]


# -- the bundle check ----------------------------------------------------------------------------
def test_the_corpus_omits_blobs_that_a_new_repository_needs(corpus: Corpus) -> None:
    omitted = corpus.description.digests
    assert len(omitted) >= 5  # console's configs and layers of v1.0.0 and v1.1.0, extras
    left = _blob_files(corpus.delta)
    assert not any(d in omitted for files in left.values() for d in files)
    # viewer's images use console's base layer: omitted (the target holds it in console only)
    _images, _sizes, users = _used_blobs(corpus.delta)
    shared = {d for d in omitted if "packages/viewer" in users.get(d, set())}
    assert shared
    assert all(
        b.repository == "packages/console" for b in corpus.description.omitted if b.digest in shared
    )


def test_the_check_accepts_omitted_blobs_and_only_those(corpus: Corpus, tmp_path: Path) -> None:
    archives = discover_archives(corpus.delta, [])
    target = parse_target("127.0.0.1:1/site/ee")
    router = Router.from_suffixes()
    needs = check_bundle(archives, target, router, delta=corpus.description)
    assert needs is not None
    assert {b.digest for b in needs.blobs} == corpus.description.digests
    by_digest = {b.digest: b for b in needs.blobs}
    assert any("packages/viewer" in b.layouts for b in by_digest.values())
    # the same archives without their delta.json: an incomplete bundle
    with pytest.raises(BundleError, match="is missing from"):
        check_bundle(archives, target, router)
    # a blob missing that the delta does not omit is still refused
    partial = Delta(
        corpus.description.id,
        corpus.description.created,
        corpus.description.base_receipt_sha256,
        corpus.description.omitted[1:],
    )
    dropped = corpus.description.omitted[0].digest
    with pytest.raises(BundleError, match=f"blob {dropped} referenced by manifest"):
        check_bundle(archives, target, router, delta=partial)


@pytest.mark.usefixtures("prefect_server")
def test_a_tampered_delta_json_is_refused_before_any_request(
    corpus: Corpus, empty_registry: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push

    bundle = tmp_path / "tampered"
    shutil.copytree(corpus.delta, bundle)
    text = (bundle / "delta.json").read_text()
    (bundle / "delta.json").write_text(text.replace('"size":', '"size": ', 1))
    empty_registry.clear_requests()
    with pytest.raises(SealedFileError, match=r"delta\.json"):
        run_push(_params(bundle, f"{empty_registry.host}/tampered/ee"))
    assert empty_registry.requests() == []


# -- pushing ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("prefect_server")
def test_a_delta_push_gives_what_a_full_push_gives_and_twice_is_a_no_op(
    corpus: Corpus, registry2: RegistryServer
) -> None:
    from flows.push import run_push

    n = next(_ns)
    site, fresh = f"delta-site-{n}/ee", f"delta-fresh-{n}/ee"
    assert run_push(_params(corpus.base, f"{registry2.host}/{site}")).ok

    registry2.clear_requests()
    result = run_push(_params(corpus.delta, f"{registry2.host}/{site}"))
    assert result.ok, result
    requests = registry2.requests()
    omitted_hex = {d[7:] for d in corpus.description.digests}
    uploaded = [p for m, p, _ in requests if m in ("PUT", "PATCH") and "/blobs/" in p]
    assert uploaded, "the new blobs are uploaded"
    assert not [p for p in uploaded if any(h in p for h in omitted_hex)], uploaded
    mounts = [p for m, p, s in requests if m == "POST" and "mount=" in p and s == 201]
    assert mounts and all(any(h in p for h in omitted_hex) for p in mounts)
    viewer = next(r for r in result.layouts if r.layout == "packages/viewer")
    assert viewer.blobs_mounted >= 1  # console's base layer, mounted from packages/console
    console = next(r for r in result.layouts if r.layout == "packages/console")
    assert console.blobs_present == 5 and console.blobs_uploaded == 2  # v1.2.0: config, layer

    assert run_push(_params(corpus.full, f"{registry2.host}/{fresh}")).ok
    applied = tags_and_digests(registry2, site)
    assert applied == tags_and_digests(registry2, fresh)
    assert {k.split(":")[0] for k in applied} >= {
        "/packages/console",
        "/packages/console/version",
        "/packages/viewer",
        "/packages/viewer/version",
    }

    registry2.clear_requests()
    again = run_push(_params(corpus.delta, f"{registry2.host}/{site}"))
    assert again.ok
    assert sum(r.blobs_uploaded + r.blobs_mounted + r.manifests_put for r in again.layouts) == 0
    # the only writes: the write check's upload session at the root, opened and cancelled
    writes = _writes(registry2)
    assert [m for m, _p, _s in writes] == ["POST", "DELETE"], writes
    assert all(p.startswith(f"/v2/{site}/blobs/uploads/") for _m, p, _s in writes), writes
    assert tags_and_digests(registry2, site) == applied


@pytest.mark.usefixtures("prefect_server")
def test_a_delta_into_an_empty_registry_fails_before_any_write(
    corpus: Corpus, empty_registry: RegistryServer
) -> None:
    from flows.push import run_push

    empty_registry.clear_requests()
    with pytest.raises(DeltaBaseMissingError) as info:
        run_push(_params(corpus.delta, f"{empty_registry.host}/nothing/ee"))
    message = str(info.value)
    count = len(corpus.description.omitted)
    assert f"{count} of the {count} blobs it omits are not in the target" in message
    assert corpus.description.id in message
    assert corpus.base_sha in message
    assert "Nothing was pushed" in message and "--delta-from" in message
    first = corpus.description.omitted[0]
    assert f"{first.digest} (nothing/ee/{first.repository})" in message
    requests = empty_registry.requests()
    assert requests and {m for m, _p, _s in requests} <= {"HEAD", "GET"}
    with empty_registry.client() as client:
        assert client.list_repositories() == []
    # a dry-run says the same (the push would fail)
    with pytest.raises(DeltaBaseMissingError):
        run_push(_params(corpus.delta, f"{empty_registry.host}/nothing/ee", dry_run=True))


@pytest.mark.usefixtures("prefect_server")
def test_a_dry_run_says_how_many_omitted_blobs_the_target_holds(
    corpus: Corpus, registry2: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.push import run_push

    site = f"delta-dry-{next(_ns)}/ee"
    assert run_push(_params(corpus.base, f"{registry2.host}/{site}")).ok
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    registry2.clear_requests()
    run_push(_params(corpus.delta, f"{registry2.host}/{site}", dry_run=True))
    count = len(corpus.description.omitted)
    assert (
        f"[dry-run] delta {corpus.description.id}: the target holds {count} of the "
        f"{count} blobs the bundle omits" in caplog.text
    )
    assert "to mount" in caplog.text  # viewer's shared base layer
    assert _writes(registry2) == []


def test_a_refused_mount_fails_the_layout_and_cancels_the_session(
    corpus: Corpus, registry2: RegistryServer, tmp_path: Path
) -> None:
    """The registry answers a mount it cannot do with an upload session (202): here the
    source named holds nothing. The layout fails with DeltaMountError before any manifest."""
    archives = discover_archives(corpus.delta, [])
    target = parse_target(f"{registry2.host}/delta-refused-{next(_ns)}/ee")
    router = Router.from_suffixes()
    tree = prepare_push_tree(archives, WorkDir(tmp_path / "t"), target, router)
    try:
        job = next(j for j in tree.jobs if j.layout == "packages/viewer")
        locations = BlobLocations()
        wrong = f"{target.path}/packages/nowhere"
        locations.seed({d: wrong for d in corpus.description.digests}, corpus.description.digests)
        registry2.clear_requests()
        with registry2.client() as client, pytest.raises(DeltaMountError) as info:
            push_layout(client, job, locations=locations)
    finally:
        tree.workdir().cleanup()
    assert f"refused to mount it from {wrong}" in str(info.value)
    writes = _writes(registry2)
    assert [m for m, p, s in writes if m == "POST" and "mount=" in p and s == 202]
    assert [m for m, _p, _s in writes if m == "DELETE"], "the upload session is cancelled"
    omitted_hex = {d[7:] for d in corpus.description.digests}
    # viewer's own blobs may be uploaded meanwhile; no omitted blob, and no manifest (no tag)
    assert not [p for m, p, _s in writes if m == "PUT" and any(h in p for h in omitted_hex)]
    assert not [p for m, p, _s in writes if m == "PUT" and "/manifests/" in p]


@pytest.mark.usefixtures("prefect_server")
def test_the_cli_says_the_target_lacks_the_base_and_exits_1(
    corpus: Corpus, empty_registry: RegistryServer, tmp_path: Path
) -> None:
    from prefect.settings import get_current_settings

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "D8_MIRROR_", "SSL_CERT_"))
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_API_URL=str(get_current_settings().api.url),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        D8_MIRROR_RETRY_BUDGET="1s",
    )
    empty_registry.clear_requests()
    done = subprocess.run(
        [*CLI, "push", str(corpus.delta), f"{empty_registry.host}/cli/ee", "--insecure"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    err = done.stderr
    assert done.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    block = err[err.index("error: target lacks the delta's base\n") :]
    assert corpus.description.id in block and corpus.base_sha in block
    assert "push the earlier delta bundles" in block
    assert {m for m, _p, _s in empty_registry.requests()} <= {"HEAD", "GET"}
    assert read_delta(corpus.delta) == corpus.description


def test_verify_accepts_a_delta_bundle_and_refuses_a_tampered_delta_json(
    corpus: Corpus, tmp_path: Path
) -> None:
    report = verify_bundle(corpus.delta)
    assert report.ok, report.verdict()
    assert any(corpus.description.id in note for note in report.notes)
    bundle = tmp_path / "tampered"
    shutil.copytree(corpus.delta, bundle)
    (bundle / "delta.json").write_text((bundle / "delta.json").read_text() + " ")
    report = verify_bundle(bundle)
    assert not report.ok
    assert any("delta.json" in p for p in report.problems), report.problems
    # without its delta description the omitted blobs are missing, each named
    assert any("is missing from" in p for p in report.problems), report.problems


def test_the_pre_check_routes_the_delta_s_repository_and_falls_back_to_the_layouts(
    corpus: Corpus, registry2: RegistryServer, tmp_path: Path
) -> None:
    """Into a target whose packages live under ``mirror/`` (``--packages-path-suffix``): a
    blob is looked for in the repository ``delta.json`` names, routed; when that lacks it (a
    delta naming a repository the target no longer has), in the repositories that need it."""
    target = parse_target(f"{registry2.host}/delta-routed-{next(_ns)}/ee")
    router = Router.from_suffixes("mirror")
    with registry2.client() as client:
        push_bundle(client, discover_archives(corpus.base, []), tmp_path / "t", target, router)
        archives = discover_archives(corpus.delta, [])
        needs = check_bundle(archives, target, router, delta=corpus.description)
        assert needs is not None
        registry2.clear_requests()
        base = check_delta_base(client, needs, target, router)
        assert base.complete and len(base.found) == len(needs.blobs)
        assert all(r.startswith(f"{target.path}/mirror/console") for r in base.found.values())
        heads = [p for m, p, _s in registry2.requests() if m == "HEAD"]
        assert len(heads) == len(needs.blobs)  # each found where delta.json says
        assert all(f"/v2/{target.path}/mirror/console" in p for p in heads)

        moved = needs.model_copy(
            update={
                "blobs": tuple(
                    b.model_copy(update={"repository": "packages/gone"}) for b in needs.blobs
                )
            }
        )
        registry2.clear_requests()
        base = check_delta_base(client, moved, target, router)
        assert base.complete, base.missing  # every one is in a console layout's repository
        assert all("/mirror/console" in r for r in base.found.values())
        heads = [p for m, p, _s in registry2.requests() if m == "HEAD"]
        assert sum(f"/v2/{target.path}/mirror/gone/" in p for p in heads) == len(needs.blobs)

        nowhere = moved.model_copy(
            update={"blobs": tuple(b.model_copy(update={"layouts": ()}) for b in moved.blobs)}
        )
        base = check_delta_base(client, nowhere, target, router)
        assert len(base.missing) == len(needs.blobs) and not base.found
        with pytest.raises(DeltaBaseMissingError) as info:
            refuse_missing_base(base, target)
        assert f"{needs.blobs[0].digest} ({target.path}/mirror/gone)" in str(info.value)
        assert f"… and {len(needs.blobs) - 5} more" in str(info.value)
