"""A kept pull cache stays bounded across nightly runs (issue 17, d8mirror.cache_gc).

Each test seeds its own root in the session registry: state A, then B (a new version,
channels moved so v1.0.0 drops out, a new package), then C (channels moved again: v1.1.0
drops out). Expected store contents come from the bundles: the set of blob digests inside
their archives' OCI layouts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request, Response
from moving_corpus import STATE_A, STATE_B, STATE_C, seed

from app.main import main
from d8mirror.cache_gc import CacheLock, read_run_records
from d8mirror.errors import PullFailed
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")

_BLOB = re.compile(r"(?:^|/)blobs/sha256/([0-9a-f]{64})$")


def _pull(source: str, bundle: Path, work: Path, **extra: Any) -> None:
    from flows.pull import run_pull
    from tasks.models import PullParameters

    run_pull(
        PullParameters(
            bundle_dir=str(bundle), source=source, insecure=True, tmp_dir=str(work), **extra
        )
    )


def _bundle_blobs(bundle: Path) -> dict[str, int]:
    """Digest -> size of every blob in the bundle's archives' layouts."""
    found: dict[str, int] = {}
    for archive in sorted(bundle.glob("*.tar")):
        with tarfile.open(archive) as tar:
            for member in tar:
                match = _BLOB.search(member.name)
                if match and member.isfile():
                    found[f"sha256:{match.group(1)}"] = member.size
    assert found, f"no blob in the archives of {bundle}"
    return found


def _store(work: Path) -> dict[str, int]:
    """Digest -> size of every blob in the cache's store."""
    return {f"sha256:{p.name}": p.stat().st_size for p in (work / "blobs" / "sha256").iterdir()}


def _archives(bundle: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != "report.json"
    }


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (inode, size)."""
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_size)
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
    }


def _disk_bytes(root: Path) -> int:
    """Bytes of the distinct files (inodes) under ``root``: what the disk holds for them."""
    inodes: dict[tuple[int, int], int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(dirpath, name))
            inodes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(inodes.values())


def test_three_nightly_runs_leave_the_store_at_the_latest_plan(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A deployment's nightly run: fixed bundle dir, fixed cache dir, the source moves on.
    After each run the store holds exactly the blobs of that run's bundle, one run record is
    left, and a rerun after the gc still gives byte-identical archives."""
    root, bundle, work = "gc-nightly/ee", tmp_path / "bundle", tmp_path / "cache"
    source = f"{registry.host}/{root}"
    for state in (STATE_A, STATE_B, STATE_C):
        seed(registry, root, state, tmp_path / "images")
        _pull(source, bundle, work)
        expected = _bundle_blobs(bundle)
        assert _store(work) == expected
        [(_path, record)] = read_run_records(work)
        assert record.blobs == set(expected)
        assert {"moving", "steady"} <= record.packages
        assert not [p for d in ("incoming", "staging") for p in (work / "blobs" / d).glob("*")]
    built = _archives(bundle)
    rerun = tmp_path / "rerun"
    _pull(source, rerun, work)
    assert _archives(rerun) == built
    assert _store(work) == _bundle_blobs(rerun)
    # Layouts, archive links and state gone: the rerun rebuilds every layout and archive from
    # the collected store alone, and asks the source for no blob and no manifest body.
    for name in ("packages", "package-versions", "archives", "state"):
        shutil.rmtree(work / name)
    registry.clear_requests()
    rebuilt = tmp_path / "rebuilt"
    _pull(source, rebuilt, work)
    fetched = [p for m, p, _ in registry.requests() if m == "GET" and "/blobs/" in p]
    bodies = [p for m, p, _ in registry.requests() if m == "GET" and "/manifests/" in p]
    assert (fetched, bodies) == ([], [])
    assert any(m == "HEAD" for m, _p, _ in registry.requests())  # the source was asked
    assert _archives(rebuilt) == built


def test_keep_runs_keeps_the_previous_runs_blobs(registry: RegistryServer, tmp_path: Path) -> None:
    """``keep_runs=1``: the store holds this run's and the run before's blobs, no more."""
    root, work = "gc-keep/ee", tmp_path / "cache"
    source = f"{registry.host}/{root}"
    bundles = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for state, bundle in zip((STATE_A, STATE_B, STATE_C), bundles, strict=True):
        seed(registry, root, state, tmp_path / "images")
        _pull(source, bundle, work, keep_runs=1)
    a, b, c = (_bundle_blobs(bundle) for bundle in bundles)
    assert set(a) - set(b) - set(c), "state A has blobs that B and C do not use"
    assert _store(work) == {**b, **c}
    assert len(read_run_records(work)) == 2


def test_gc_dry_run_reports_what_gc_then_reclaims(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``d8mirror gc --dry-run`` removes nothing and reports the numbers ``d8mirror gc`` then
    reclaims: blobs, files, and the disk space actually freed (hard links counted once). A
    package no longer pulled loses its working dir, archive links and state."""
    root, work = "gc-cli/ee", tmp_path / "cache"
    source = f"{registry.host}/{root}"
    seed(registry, root, STATE_A, tmp_path / "images")
    _pull(source, tmp_path / "a", work, keep_runs=9)
    seed(registry, root, STATE_B, tmp_path / "images")
    _pull(source, tmp_path / "b", work, keep_runs=9, exclude_packages=["steady"])
    assert (work / "packages" / "steady").is_dir()
    both = _store(work)
    assert both == {**_bundle_blobs(tmp_path / "a"), **_bundle_blobs(tmp_path / "b")}

    before, disk = _tree(tmp_path), _disk_bytes(tmp_path)
    capsys.readouterr()
    assert main(["gc", str(work), "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert _tree(tmp_path) == before
    assert main(["gc", str(work), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)

    latest = _bundle_blobs(tmp_path / "b")
    assert _store(work) == latest
    assert planned == {**done, "dry_run": True}
    assert done["blobs_removed"] == len(both) - len(latest) > 0
    assert done["blob_bytes_removed"] == sum(both.values()) - sum(latest.values())
    assert done["blobs_kept"] == len(latest)
    assert done["bytes_freed"] == disk - _disk_bytes(tmp_path) > 0
    assert done["files_removed"] == len(before) - len(_tree(tmp_path))
    assert not (work / "packages" / "steady").exists()
    assert not (work / "archives" / "steady").exists()
    assert not list((work / "state").glob("steady.*"))
    assert (work / "packages" / "moving").is_dir()
    assert len(read_run_records(work)) == 1

    assert main(["gc", str(work), "--dry-run"]) == 0
    assert "Blobs would remove: 0, 0 B" in capsys.readouterr().out


def test_gc_refuses_a_cache_in_use_and_a_pull_skips_its_gc(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a pull holds the cache (its shared lock), ``d8mirror gc`` fails naming it and
    removes nothing, and another pull's own gc is skipped (its record is still written)."""
    root, work = "gc-lock/ee", tmp_path / "cache"
    source = f"{registry.host}/{root}"
    seed(registry, root, STATE_A, tmp_path / "images")
    _pull(source, tmp_path / "a", work)
    seed(registry, root, STATE_B, tmp_path / "images")
    with CacheLock(work):  # a pull running beside
        _pull(source, tmp_path / "b", work)
        assert _store(work) == {**_bundle_blobs(tmp_path / "a"), **_bundle_blobs(tmp_path / "b")}
        assert len(read_run_records(work)) == 2
        before = _tree(work)
        capsys.readouterr()
        assert main(["gc", str(work)]) == 1
        assert "in use by a running pull" in capsys.readouterr().err
        assert _tree(work) == before
    assert main(["gc", str(work)]) == 0
    assert _store(work) == _bundle_blobs(tmp_path / "b")


def test_a_failed_run_removes_nothing_and_its_retry_collects(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A run whose package fails (a blob the source refuses) removes no blob and writes no
    record; the run after it, complete, collects down to its own plan."""
    root, work = "gc-fail/ee", tmp_path / "cache"
    seed(registry, root, STATE_A, tmp_path / "images")
    _pull(f"{registry.host}/{root}", tmp_path / "a", work)
    seed(registry, root, STATE_B, tmp_path / "images")
    prefix = f"/v2/{root}/packages/newcomer/blobs/"

    def refuse(request: Request) -> Response | None:
        if request.method == "GET" and request.path.startswith(prefix):
            return Response.error(404, "BLOB_UNKNOWN")
        return None

    after_a = _store(work)
    with (
        FaultProxy(registry.host, intercept=refuse) as proxy,
        pytest.raises(PullFailed, match="newcomer"),
    ):
        _pull(f"{proxy.host}/{root}", tmp_path / "b", work)
    kept = _store(work)
    assert kept.items() >= after_a.items()
    assert len(kept) > len(after_a)  # the failed run's other packages' blobs stay too
    assert len(read_run_records(work)) == 1
    _pull(f"{registry.host}/{root}", tmp_path / "b", work)
    assert _store(work) == _bundle_blobs(tmp_path / "b")


def test_gc_without_a_run_record_removes_nothing(tmp_path: Path) -> None:
    """A cache no pull of this version recorded: nothing tells what to keep."""
    work = tmp_path / "cache"
    (work / "blobs" / "sha256").mkdir(parents=True)
    (work / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"x")
    assert main(["gc", str(work)]) == 1
    assert (work / "blobs" / "sha256" / ("0" * 64)).is_file()


def test_gc_keeps_what_the_kept_packages_layouts_hold_now(tmp_path: Path) -> None:
    """A layout rebuilt after the newest record (a mirror-package run into the bundle) keeps
    its blobs; a blob nothing references goes, and so do leftovers of writers."""
    from d8mirror.cache_gc import RunRecord, collect_garbage, write_run_record
    from d8mirror.hashing import sha256_bytes_digest

    work = tmp_path / "cache"
    store, layout = work / "blobs" / "sha256", work / "packages" / "p" / "blobs" / "sha256"
    store.mkdir(parents=True)
    layout.mkdir(parents=True)
    digests = {}
    for name in ("recorded", "relinked", "orphan"):
        digest = digests[name] = sha256_bytes_digest(name.encode())
        (store / digest.split(":")[1]).write_bytes(name.encode())
    os.link(store / digests["relinked"].split(":")[1], layout / digests["relinked"].split(":")[1])
    (work / "blobs" / "incoming").mkdir()
    (work / "blobs" / "incoming" / "abc.partial").write_bytes(b"half")
    write_run_record(work, RunRecord.build("r1", [digests["recorded"]], packages=["p"]))
    report = collect_garbage(work)
    assert set(_store(work)) == {digests["recorded"], digests["relinked"]}
    assert (report.blobs_removed, report.files_removed) == (1, 2)
    assert report.bytes_freed == len(b"orphan") + len(b"half")
    assert not (work / "blobs" / "incoming" / "abc.partial").exists()
