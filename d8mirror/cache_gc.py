"""Garbage collection of a kept pull cache: the disk stays bounded across nightly runs.

A kept cache (``--tmp-dir``, a deployment's ``tmp_dir``, ``D8MIRROR_CACHE_DIR``) holds::

    blobs/sha256/<hex>           the content-addressed blob store (:mod:`d8mirror.blobstore`)
    blobs/staging/, incoming/    writers' temp files and resumable ``.partial`` downloads
    packages/<name>/             a package's layouts (hard links into the store)
    package-versions/<name>/     a catalog package's release-image layout
    archives/<name>/<key>/       links to the archive last packed (pull.archive_cache)
    state/<name>.<what>          a package's fetch key, tag record, pack record, outcome
    runs/<created>-<run>.json    what each successful pull run referenced (:class:`RunRecord`)
    cache.lock                   the lock below

Without gc every one of them only grows: old versions' blobs stay in the store, packages no
longer selected keep their layouts, archive links and state.

**Run records.** A successful pull writes ``runs/<created>-<flow run>.json`` (atomically):
the digests its layouts hold and every digest its fetchers read or put in the store
(manifests and indexes its planning and sizing read included), and the packages and catalog
packages it pulled. Digests and names only: a few hundred KB for a large pull.

**What gc keeps.** The union of the newest ``keep_runs + 1`` records: their blobs, and for
their packages the layouts (and every blob those layouts hold now), archive links and state.
Everything else under the directories above goes, older records too; entries a d8mirror pull
does not make are left alone (a ``--tmp-dir`` may hold other things). A run that fails or
is cancelled writes no record and collects nothing: its retry finds every blob it fetched.

**Locking.** ``cache.lock`` is ``flock``-ed: a pull holds it shared for its whole run (so
several pulls share one cache, as the store allows), gc takes it exclusive without waiting.
So gc never removes a blob a running pull is writing or linking: when any pull holds the
cache, ``d8mirror gc`` fails with :class:`~d8mirror.errors.CacheBusyError` and the automatic
gc at the end of a pull is skipped (the next successful run or ``d8mirror gc`` does it). A
filesystem without ``flock`` (some NFS mounts) gets no lock: do not run gc there while a pull
runs.

**Sizes.** ``bytes_freed`` counts a file's bytes once every hard link to it is among the
removed paths (layouts and archive links share inodes with the store and the bundle): what
the disk gets back. A dry-run computes the same plan and removes nothing, so its numbers are
the ones the real gc then reports.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from d8mirror.errors import CacheBusyError, CacheError, wrap_os_error
from d8mirror.files import write_atomic
from d8mirror.mediatypes import MAX_MANIFEST_BYTES
from d8mirror.reference import is_valid_digest, validate_digest
from d8mirror.sealed import canonical_json
from d8mirror.units import human_size_exact

RECORD_FORMAT = "d8mirror.cache-run/v1"
RUNS_DIR = "runs"
LOCK_FILE = "cache.lock"
STORE_DIR = "blobs"
PACKAGES_DIR = "packages"
VERSIONS_DIR = "package-versions"
ARCHIVES_DIR = "archives"
STATE_DIR = "state"
#: Blobs larger than this are no manifest (layers); smaller ones are read to find references.
_MAX_MANIFEST_READ = MAX_MANIFEST_BYTES
#: The per-package state files of a pull (``tasks.pull``): ``state/<name><suffix>``.
FETCH_KEY_SUFFIX = ".fetch-key"
FETCH_TAGS_SUFFIX = ".fetch-tags.json"
PACK_RECORD_SUFFIX = ".pack.json"
OUTCOME_SUFFIX = ".outcome.json"
STATE_SUFFIXES = (FETCH_KEY_SUFFIX, FETCH_TAGS_SUFFIX, PACK_RECORD_SUFFIX, OUTCOME_SUFFIX)
#: flock errors of filesystems that cannot lock (some NFS mounts): no lock is held there.
_NO_LOCKS = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})


# -- run records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """What one successful pull run referenced in its cache (see the module docstring)."""

    created: str
    run: str
    blobs: frozenset[str]
    packages: frozenset[str] = frozenset()
    catalog: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        run: str,
        blobs: Iterable[str],
        packages: Iterable[str] = (),
        catalog: Iterable[str] = (),
        created: datetime | None = None,
    ) -> RunRecord:
        when = (created or datetime.now(UTC)).astimezone(UTC)
        return cls(
            created=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            run=run,
            blobs=frozenset(validate_digest(d) for d in blobs),
            packages=frozenset(packages),
            catalog=frozenset(catalog),
        )

    @property
    def file_name(self) -> str:
        """``<created, compact>-<run>.json``: names sort by creation time."""
        stamp = self.created.replace("-", "").replace(":", "")
        safe_run = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.run) or "run"
        return f"{stamp}-{safe_run}.json"

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "format": RECORD_FORMAT,
                "created": self.created,
                "run": self.run,
                "blobs": sorted(self.blobs),
                "packages": sorted(self.packages),
                "catalog": sorted(self.catalog),
            }
        )


def parse_run_record(data: bytes, where: Path) -> RunRecord:
    """A record from its bytes; CacheError naming ``where`` when it is not one."""
    try:
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError(f"format is not {RECORD_FORMAT}")
        return RunRecord(
            created=str(doc["created"]),
            run=str(doc["run"]),
            blobs=frozenset(validate_digest(str(d)) for d in doc["blobs"]),
            packages=frozenset(str(p) for p in doc.get("packages", [])),
            catalog=frozenset(str(p) for p in doc.get("catalog", [])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(
            f"run record {where} is not a d8mirror cache run record ({exc}): nothing was "
            "removed; delete that file (its run's blobs are then not kept) and run gc again"
        ) from exc


def write_run_record(cache: Path, record: RunRecord) -> Path:
    """Write ``record`` under ``<cache>/runs/`` atomically; its path."""
    path = Path(cache) / RUNS_DIR / record.file_name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, record.to_bytes())
    except OSError as exc:
        raise wrap_os_error(exc, str(path)) from exc
    return path


def read_run_records(cache: Path) -> list[tuple[Path, RunRecord]]:
    """Every run record of ``cache``, oldest first (CacheError for a malformed one)."""
    directory = Path(cache) / RUNS_DIR
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if path.name.startswith(".") or path.suffix != ".json" or not path.is_file():
            continue
        found.append((path, parse_run_record(path.read_bytes(), path)))
    return sorted(found, key=lambda item: (item[1].created, item[0].name))


def layout_blobs(directory: Path) -> set[str]:
    """Every blob digest held by the OCI layouts under ``directory`` (``**/blobs/sha256/*``)
    and every digest their manifests reference: a delta pull links no blob its base receipt
    lists, yet its plan references them (and the store may hold them: layers it read to plan,
    an earlier full pull's), so they are kept too."""
    found: set[str] = set()
    if not directory.is_dir():
        return found
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        here = Path(root)
        if here.name == "sha256" and here.parent.name == "blobs":
            for name in files:
                if _is_hex(name):
                    found.add(f"sha256:{name}")
                    found |= _references(here / name)
    return found


def _references(path: Path) -> set[str]:
    """The digests a manifest or index blob references (nothing for any other blob)."""
    try:
        if path.stat().st_size > _MAX_MANIFEST_READ:
            return set()
        with path.open("rb") as stream:
            if stream.read(1) != b"{":  # a layer: not read further
                return set()
            data = b"{" + stream.read(_MAX_MANIFEST_READ)
    except OSError:
        return set()
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return set()
    if not isinstance(doc, dict):
        return set()
    described = [doc.get("config"), *_as_list(doc.get("layers")), *_as_list(doc.get("manifests"))]
    return {
        d["digest"]
        for d in described
        if isinstance(d, dict) and isinstance(d.get("digest"), str) and is_valid_digest(d["digest"])
    }


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _is_hex(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def run_references(
    cache: Path, run: str, packages: Iterable[str], catalog: Iterable[str], used: Iterable[str]
) -> RunRecord:
    """The record of a run that pulled ``packages`` (and the release images of ``catalog``)
    into ``cache``: its layouts' blobs and the digests its fetchers ``used``."""
    packages, catalog = sorted(set(packages)), sorted(set(catalog))
    blobs = set(used)
    for name in packages:
        blobs |= layout_blobs(Path(cache) / PACKAGES_DIR / name)
    for name in catalog:
        blobs |= layout_blobs(Path(cache) / VERSIONS_DIR / name)
    return RunRecord.build(run, blobs, packages, catalog)


# -- the lock ------------------------------------------------------------------------------------
class CacheLock:
    """``<cache>/cache.lock``: shared by pulls, exclusive for gc (module docstring)."""

    def __init__(self, cache: Path) -> None:
        self.path = Path(cache) / LOCK_FILE
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise wrap_os_error(exc, str(self.path)) from exc

    def acquire_shared(self) -> None:
        """Hold the lock shared (waits while a gc holds it exclusive)."""
        if self._fd is not None:
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise wrap_os_error(exc, str(self.path)) from exc
        self._fd = fd

    def acquire_exclusive(self) -> None:
        """Hold the lock exclusive, now or never: CacheBusyError when a pull or gc holds it."""
        if self._fd is not None:
            raise CacheBusyError(f"{self.path} is already held by this lock object")
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CacheBusyError(
                    f"the pull cache {self.path.parent} is in use by a running pull (or "
                    "another gc): nothing was removed; run gc again once it ends"
                ) from exc
            if exc.errno not in _NO_LOCKS:
                raise wrap_os_error(exc, str(self.path)) from exc
            fd = self._open()
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> CacheLock:
        self.acquire_shared()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@contextmanager
def exclusive(cache: Path) -> Iterator[None]:
    """Hold ``cache``'s lock exclusive for the block (CacheBusyError at once when in use)."""
    lock = CacheLock(cache)
    lock.acquire_exclusive()
    try:
        yield
    finally:
        lock.release()


# -- the plan and the report ---------------------------------------------------------------------
@dataclass
class GcPlan:
    """What a gc of ``cache`` keeps and removes (computed, nothing done yet)."""

    cache: Path
    runs_kept: list[str]
    keep: frozenset[str]
    blobs: list[Path] = field(default_factory=list)
    trees: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def paths(self) -> list[Path]:
        """Removed in this order: working dirs, then blobs, then state and records."""
        return [*self.trees, *self.blobs, *self.files]


@dataclass(frozen=True)
class GcReport:
    """What a gc removed (or, dry-run, would remove); sizes in bytes."""

    cache: str
    dry_run: bool
    runs_kept: tuple[str, ...]
    blobs_kept: int
    blob_bytes_kept: int
    blobs_removed: int
    blob_bytes_removed: int
    files_removed: int
    bytes_freed: int

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        freed = "would free" if self.dry_run else "freed"
        runs = ", ".join(self.runs_kept) or "none"
        return [
            f"Cache {self.cache}: kept the blobs of {len(self.runs_kept)} run(s): {runs}",
            f"Blobs kept: {self.blobs_kept}, {human_size_exact(self.blob_bytes_kept)}",
            f"Blobs {verb}: {self.blobs_removed}, {human_size_exact(self.blob_bytes_removed)}",
            f"Files {verb} in all (blobs, layouts, archive links, state, records): "
            f"{self.files_removed}",
            f"Disk space {freed}: {human_size_exact(self.bytes_freed)}",
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "dry_run": self.dry_run,
            "runs_kept": list(self.runs_kept),
            "blobs_kept": self.blobs_kept,
            "blob_bytes_kept": self.blob_bytes_kept,
            "blobs_removed": self.blobs_removed,
            "blob_bytes_removed": self.blob_bytes_removed,
            "files_removed": self.files_removed,
            "bytes_freed": self.bytes_freed,
        }


def plan_gc(cache: Path, keep_runs: int = 0) -> GcPlan:
    """What gc keeps of ``cache`` (the newest ``keep_runs + 1`` run records) and removes.
    CacheError when the cache has no run record (nothing tells what to keep)."""
    if keep_runs < 0:
        raise CacheError(f"keep-runs must be 0 or more, not {keep_runs}")
    cache = Path(cache)
    records = read_run_records(cache)
    if not records:
        raise CacheError(
            f"{cache} holds no pull run record ({RUNS_DIR}/*.json): nothing tells what to keep, "
            "so nothing was removed; run a pull with this cache dir (--tmp-dir) first"
        )
    kept = records[-(keep_runs + 1) :]
    packages = {p for _, r in kept for p in r.packages}
    catalog = {p for _, r in kept for p in r.catalog}
    keep = frozenset(
        {d for _, r in kept for d in r.blobs} | _kept_layouts_blobs(cache, packages, catalog)
    )
    plan = GcPlan(cache=cache, runs_kept=[p.name for p, _ in kept], keep=keep)
    plan.blobs = _store_garbage(cache / STORE_DIR, keep)
    plan.trees = [
        *_unselected_dirs(cache / PACKAGES_DIR, packages),
        *_unselected_dirs(cache / VERSIONS_DIR, catalog),
        *_unselected_dirs(cache / ARCHIVES_DIR, packages),
        *_archive_leftovers(cache / ARCHIVES_DIR, packages),
    ]
    plan.files = [
        *_store_leftovers(cache / STORE_DIR),
        *_unselected_state(cache / STATE_DIR, packages),
        *[path for path, _ in records[: -(keep_runs + 1)]],
    ]
    return plan


def _kept_layouts_blobs(cache: Path, packages: set[str], catalog: set[str]) -> set[str]:
    """The blobs the kept packages' layouts hold now: a layout a later run rebuilt without
    a record of its own (``mirror-package`` into the bundle) keeps its blobs in the store."""
    found: set[str] = set()
    for name in packages:
        found |= layout_blobs(cache / PACKAGES_DIR / name)
    for name in catalog:
        found |= layout_blobs(cache / VERSIONS_DIR / name)
    return found


def _children(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _store_garbage(store: Path, keep: frozenset[str]) -> list[Path]:
    return [
        p
        for p in _children(store / "sha256")
        if p.is_file() and f"sha256:{p.name}" not in keep and not p.is_symlink()
    ]


def _store_leftovers(store: Path) -> list[Path]:
    """Writers' temp files and partial downloads: no writer runs while gc holds the lock, and
    whatever a kept run needs is complete in the store."""
    return [p for name in ("staging", "incoming") for p in _children(store / name) if p.is_file()]


def _unselected_dirs(directory: Path, selected: set[str]) -> list[Path]:
    return [
        p
        for p in _children(directory)
        if p.is_dir() and not p.is_symlink() and p.name not in selected
    ]


def _archive_leftovers(archives: Path, packages: set[str]) -> list[Path]:
    """Staging dirs of an archive cache entry that was never put in place (``.<key>.*.tmp``)."""
    return [
        p
        for name in sorted(packages)
        for p in _children(archives / name)
        if p.name.startswith(".") and p.is_dir() and not p.is_symlink()
    ]


def _unselected_state(state: Path, packages: set[str]) -> list[Path]:
    stale = []
    for path in _children(state):
        owner = _state_owner(path.name)
        if owner is not None and owner not in packages and path.is_file():
            stale.append(path)
    return stale


def _state_owner(name: str) -> str | None:
    for suffix in STATE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


# -- sizes and removal ---------------------------------------------------------------------------
def _files_under(path: Path) -> Iterator[Path]:
    if path.is_dir() and not path.is_symlink():
        for root, _dirs, files in os.walk(path):
            for name in files:
                yield Path(root) / name
    elif path.exists() or path.is_symlink():
        yield path


def measure(plan: GcPlan) -> GcReport:
    """The report of ``plan`` (nothing removed): counts and sizes, links counted once."""
    links: dict[tuple[int, int], list[int]] = {}  # inode -> [links removed, nlink, size]
    files = 0
    for path in plan.paths():
        for member in _files_under(path):
            try:
                stat = member.lstat()
            except FileNotFoundError:
                continue
            files += 1
            entry = links.setdefault((stat.st_dev, stat.st_ino), [0, stat.st_nlink, stat.st_size])
            entry[0] += 1
    freed = sum(size for removed, nlink, size in links.values() if removed >= nlink)
    removed = set(plan.blobs)
    kept = [p for p in _children(plan.cache / STORE_DIR / "sha256") if p not in removed]
    return GcReport(
        cache=str(plan.cache),
        dry_run=True,
        runs_kept=tuple(plan.runs_kept),
        blobs_kept=len(kept),
        blob_bytes_kept=sum(_size(p) for p in kept),
        blobs_removed=len(plan.blobs),
        blob_bytes_removed=sum(_size(p) for p in plan.blobs),
        files_removed=files,
        bytes_freed=freed,
    )


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def remove(plan: GcPlan) -> None:
    """Remove what ``plan`` names (hold the cache's exclusive lock)."""
    for path in plan.paths():
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise CacheError(
                f"gc could not remove {path}: {exc.strerror or exc}; check its permissions "
                "and run gc again (what was removed so far is not needed by the kept runs)"
            ) from exc


def collect_garbage(cache: Path, *, keep_runs: int = 0, dry_run: bool = False) -> GcReport:
    """gc of ``cache`` under its exclusive lock: keep what the newest ``keep_runs + 1`` run
    records reference, remove the rest (``dry_run``: only report it). CacheBusyError when a
    pull is running, CacheError when the cache has no usable run record."""
    cache = Path(cache)
    if not cache.is_dir():
        raise CacheError(f"pull cache {cache} is not a directory: check the path")
    with exclusive(cache):
        plan = plan_gc(cache, keep_runs)
        report = measure(plan)
        if dry_run:
            return report
        remove(plan)
    return GcReport(**{**report.to_json(), "dry_run": False, "runs_kept": report.runs_kept})
