"""The exact size of a pull before it moves a byte: images, unique blobs, bytes to download,
the bundle's archives, and whether the disks can hold them (issue 16).

:func:`size_package` walks what :func:`~d8mirror.pull.package.fetch_package` would record for
a :class:`~d8mirror.pull.plan.PackagePlan` (channel, main, release, internal, extra and VEX
images, layout by layout) reading manifests only: they go through the fetcher's manifest path,
so they land in the blob store and the real fetch never GETs them again. No layer is fetched
(the plan already fetched its small channel images). Internal (``images_digests.json``) and
extra (``extra_images.json``) images are named inside the main images' layers: they are sized
only when those layers are in the blob store (a rerun), or with ``fetch_main`` (a real pull:
the main images are fetched first, as the pull would); otherwise the package's size is a lower
bound and says so (``unsized``, ``needs_layers``).
:func:`size_release_catalog` does the same for one package's part of ``package-versions.tar``.

An archive is a deterministic GNU tar of the layouts' files (:mod:`d8mirror.bundle.tarwriter`):
its size follows from the file names and sizes alone, and ``index.json`` is written from
descriptors known here, so the expected archive size is exact (:func:`tar_size`).

:class:`PullSizing` adds the packages up (blobs deduplicated across packages), and
:func:`check_space` refuses a pull that would not fit (margin: :func:`margin_for`), before
the blobs it counts are fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydantic import BaseModel, Field

from d8mirror.blobstore import BlobStore
from d8mirror.errors import InsufficientSpaceError, MirrorError
from d8mirror.imagefs import (
    parse_extra_images_json,
    parse_images_digests,
    read_file_from_layers,
)
from d8mirror.layout import INDEX_FILE, OCI_LAYOUT_FILE, IndexEntry
from d8mirror.mediatypes import (
    ANNOTATION_REF_NAME,
    ANNOTATION_SHORT_TAG,
    OCI_INDEX,
    OCI_LAYOUT_VERSION,
)
from d8mirror.names import EXTRA, PACKAGES, VERSION, vex_ref_for, vex_tag_for
from d8mirror.units import human_size

from .fetcher import ImageFetcher, dedupe
from .manifests import MAX_INDEX_DEPTH, amd64_child, parse_manifest
from .options import PullOptions
from .package import remember_plan
from .plan import PackagePlan, available_channels, channel_version, reads_channels

#: tarfile's block and record sizes (GNU format, as :func:`~d8mirror.bundle.write_tar`).
_BLOCK = 512
_RECORD = 20 * _BLOCK
_NAME_MAX = 100
#: The space check's margin: 1% of what is needed, plus 64 MiB (metadata, logs, report).
MARGIN_FRACTION = 0.01
MARGIN_BYTES = 64 << 20


def _blocks(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def tar_size(members: dict[str, int]) -> int:
    """Bytes of the deterministic tar of ``members`` (arcname → file size): a header and the
    padded data per member, a GNU long-name entry for names over 100 bytes, the two-block
    trailer, padded to tarfile's 10 KiB record."""
    total = 0
    for name, size in members.items():
        encoded = len(name.encode("utf-8"))
        if encoded > _NAME_MAX:
            total += _BLOCK + _blocks(encoded + 1)
        total += _BLOCK + _blocks(size)
    total += 2 * _BLOCK
    return -(-total // _RECORD) * _RECORD


@dataclass
class _Layout:
    """What one layout of a package would hold: its blob files and its index descriptors."""

    files: dict[str, int] = field(default_factory=dict)
    entries: dict[tuple[str, str], IndexEntry] = field(default_factory=dict)

    def add(self, media_type: str, digest: str, size: int, short_tag: str, ref_name: str) -> None:
        self.entries.setdefault(
            (short_tag, digest),
            IndexEntry(
                media_type,
                digest,
                size,
                {ANNOTATION_SHORT_TAG: short_tag, ANNOTATION_REF_NAME: ref_name},
            ),
        )

    def members(self, prefix: str) -> dict[str, int]:
        """The layout's files as tar members under ``prefix`` (see :meth:`Layout.create`)."""
        manifests = [e.to_json() for e in self.entries.values()]
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        index = len((json.dumps(doc, indent=2) + "\n").encode("utf-8"))
        oci = len(
            (json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}, indent=2) + "\n").encode()
        )
        out = {f"{prefix}/{OCI_LAYOUT_FILE}": oci, f"{prefix}/{INDEX_FILE}": index}
        for digest, size in self.files.items():
            out[f"{prefix}/blobs/sha256/{digest.split(':', 1)[1]}"] = size
        return out


class PackageSize(BaseModel):
    """The size of one package's pull (or of its part of ``package-versions.tar``)."""

    name: str
    images: int = Field(0, description="Images recorded in the layouts.")
    blobs: dict[str, int] = Field(
        default_factory=dict, description="Config and layer blobs (digest → size) to fetch."
    )
    manifests: dict[str, int] = Field(
        default_factory=dict, description="Manifests read (already in the blob store now)."
    )
    missing: dict[str, int] = Field(
        default_factory=dict, description="Of ``blobs``, those not in the blob store yet."
    )
    archive_bytes: int = Field(0, description="The expected archive size (0: no archive).")
    members: dict[str, int] = Field(
        default_factory=dict, description="The archive's files (tar name → size)."
    )
    fetched_early: dict[str, int] = Field(
        default_factory=dict,
        description="Of ``missing``, the main images' blobs the sizing fetched to read them.",
    )
    bytes_fetched_early: int = Field(
        0, description="Bytes this sizing downloaded itself (a blob another took is not here)."
    )
    unsized: list[str] = Field(
        default_factory=list, description="What could not be sized without a real pull."
    )
    needs_layers: bool = Field(
        False,
        description="Internal and extra images unsized: the main images' layers are not in the "
        "blob store (a pull sizes them exactly with ``fetch_main``).",
    )


class _Sizer:
    """One sizing: images walked through manifests, recorded per layout."""

    def __init__(self, fetcher: ImageFetcher, options: PullOptions, name: str) -> None:
        self.fetcher, self.options, self.name = fetcher, options, name
        self.layouts: dict[str, _Layout] = {}
        self.blobs: dict[str, int] = {}
        self.manifests: dict[str, int] = {}
        self.unsized: list[str] = []
        self.layers: dict[str, tuple[tuple[str, int], ...]] = {}
        self.repositories: dict[str, str] = {}
        #: Fetch a delta's left-out layers to read them (a real pull's ``fetch_main``).
        self.fetch_left_out = False
        self.closures: dict[str, dict[str, int]] = {}
        self.needs_layers = False
        self.fetched_early: set[str] = set()
        self.bytes_fetched_early = 0

    def layout(self, key: str) -> _Layout:
        return self.layouts.setdefault(key, _Layout())

    def image(self, repo: str, digest: str, depth: int = 0) -> tuple[str, str, int]:
        """(media type, digest, size) of the manifest a layout records for ``repo@digest``
        (an index is flattened to its linux/amd64 image, as the fetcher does); the blobs of
        the image are noted under ``digest``."""
        media_type, data = self.fetcher._manifest(repo, digest)
        self.manifests[digest] = len(data)
        manifest = parse_manifest(data, media_type, f"{repo}@{digest}")
        if manifest.is_index and depth < MAX_INDEX_DEPTH:
            return self.image(repo, amd64_child(manifest, f"{repo}@{digest}"), depth + 1)
        blobs = [*([manifest.config] if manifest.config else []), *manifest.layers]
        blobs = [b for b in blobs if not self.fetcher.omits(b[0])]  # a delta's: not packed
        self.blobs.update(blobs)
        self.layers[digest] = tuple(manifest.layers)
        self.repositories[digest] = repo
        self.closures[digest] = {digest: len(data), **dict(blobs)}
        return media_type, digest, len(data)

    def record(self, key: str, repo: str, digest: str, short_tag: str, ref_name: str) -> str:
        """``repo@digest`` recorded in layout ``key`` under ``short_tag``; returns the
        digest of the image recorded (an index's linux/amd64 image)."""
        media_type, top, size = self.image(repo, digest)
        layout = self.layout(key)
        layout.files.update(self.closures[top])
        layout.add(media_type, top, size, short_tag, ref_name)
        return top

    def read_file(self, digest: str, name: str, *, top_first_any: bool) -> bytes | bool | None:
        """A file of an image already sized; False when its layers are not in the store
        (layers a delta pull leaves out are fetched to be read with ``fetch_left_out``)."""
        layers = self.layers.get(digest)
        store, fetcher = self.fetcher.store, self.fetcher
        if layers is None:
            return False
        missing = [d for d, _ in layers if not (store.has(d) and store.verified(d))]
        if missing and self.fetch_left_out and all(fetcher.omits(d) for d in missing):
            return fetcher.read_layers(
                self.repositories[digest], layers, name, top_first_any=top_first_any
            )
        if missing:
            return False
        paths = [store.path(d) for d, _ in layers]
        return read_file_from_layers(paths, name, top_first_any=top_first_any)

    def result(self, prefix: str) -> PackageSize:
        members: dict[str, int] = {}
        for key, layout in self.layouts.items():
            members.update(layout.members(f"{prefix}/{key}".rstrip("/")))
        has_images = any(layout.entries for layout in self.layouts.values())
        store = self.fetcher.store
        return PackageSize(
            name=self.name,
            images=sum(len(layout.entries) for layout in self.layouts.values()),
            blobs=self.blobs,
            manifests=self.manifests,
            missing={
                d: s
                for d, s in self.blobs.items()
                if d in self.fetched_early or not _held(store, d, s)
            },
            fetched_early={d: self.blobs[d] for d in self.fetched_early if d in self.blobs},
            needs_layers=self.needs_layers,
            bytes_fetched_early=self.bytes_fetched_early,
            archive_bytes=tar_size(members) if has_images else 0,
            members=members if has_images else {},
            unsized=self.unsized,
        )


def _held(store: BlobStore, digest: str, size: int) -> bool:
    return store.has(digest, size=size) and store.verified(digest)


def size_package(
    fetcher: ImageFetcher, options: PullOptions, plan: PackagePlan, *, fetch_main: bool = False
) -> PackageSize:
    """The size of pulling ``plan`` (see the module docstring): manifest requests only, unless
    ``fetch_main``: then the main images' blobs are fetched first (the pull needs them anyway)
    so that the internal and extra images they name are sized too."""
    remember_plan(fetcher, options, plan)
    sizer = _Sizer(fetcher, options, plan.name)
    sizer.fetch_left_out = fetch_main
    name = plan.name
    repo, version_repo = options.package_repo(name), options.version_repo(name)
    only_extra = options.only_extra_images
    sizer.layout("")
    sizer.layout(VERSION)
    if reads_channels(options, options.package_filter.constraint_for(name)):
        for channel, digest in plan.channels.items():
            if digest is not None:
                sizer.record(
                    VERSION, version_repo, digest, channel, options.ref(version_repo, channel)
                )
    fetcher.resolve_many([(repo, v) for v in plan.versions])
    mains: list[str] = []
    vex_inputs: list[str] = []
    for version in plan.versions:
        digest = fetcher.resolve(repo, version)
        if not only_extra:
            vex_inputs.append(options.ref(repo, version))
        if digest is None:
            continue
        if fetch_main:
            _tolerant(
                sizer, f"main image {repo}@{digest}", partial(_fetch_main, sizer, repo, digest)
            )
        if only_extra:
            mains.append(sizer.image(repo, digest)[1])
        else:
            mains.append(sizer.record("", repo, digest, version, options.ref(repo, version)))
    internal: list[str] = []
    if not only_extra:
        fetcher.resolve_many([(version_repo, v) for v in plan.versions])
        for version in plan.versions:
            _tolerant(
                sizer,
                f"release image {version_repo}:{version}",
                partial(_release, sizer, version_repo, version),
            )
        internal = _internal_digests(sizer, mains)
    for digest in internal:
        vex_inputs.append(options.ref(repo, digest))
        _tolerant(
            sizer,
            f"internal image {repo}@{digest}",
            partial(
                sizer.record, "", repo, digest, digest.split(":", 1)[1], options.ref(repo, digest)
            ),
        )
    vex_inputs += _extras(sizer, mains)
    if not options.skip_vex_images:
        _vex(sizer, repo, vex_inputs)
    return sizer.result(f"{PACKAGES}/{name}")


def _fetch_main(sizer: _Sizer, repo: str, digest: str) -> None:
    """Fetch a main image into the store, noting which of its blobs were not there."""
    store = sizer.fetcher.store
    top = sizer.image(repo, digest)[1]
    before = {d for d, n in sizer.closures[top].items() if not _held(store, d, n)}
    downloaded = sizer.fetcher.stats.bytes_fetched
    sizer.fetcher.image(repo, digest)
    sizer.fetched_early |= before
    sizer.bytes_fetched_early += sizer.fetcher.stats.bytes_fetched - downloaded


def _tolerant(sizer: _Sizer, what: str, step: Callable[[], object]) -> None:
    """Run ``step``; a failure is noted (the fetch meets it again, as a warning or error)."""
    try:
        step()
    except MirrorError as exc:
        sizer.unsized.append(f"{what}: {exc}")


def _release(sizer: _Sizer, version_repo: str, version: str) -> None:
    digest = sizer.fetcher.resolve(version_repo, version)
    if digest:
        sizer.record(
            VERSION, version_repo, digest, version, sizer.options.ref(version_repo, version)
        )


def _read(sizer: _Sizer, mains: list[str], name: str, *, top_first_any: bool) -> list[bytes]:
    """``name`` from every main image whose layers are in the store; a note for the others."""
    found: list[bytes] = []
    unread = 0
    for digest in mains:
        data = sizer.read_file(digest, name, top_first_any=top_first_any)
        if data is False:
            unread += 1
        elif isinstance(data, bytes):
            found.append(data)
    if unread and not sizer.needs_layers:
        sizer.needs_layers = True
        sizer.unsized.append(
            f"internal and extra images named inside {unread} main image(s): their layers "
            "are not in the blob store yet (a real pull sizes them before the rest)"
        )
    return found


def _internal_digests(sizer: _Sizer, mains: list[str]) -> list[str]:
    digests: list[str] = []
    for data in _read(sizer, mains, "images_digests.json", top_first_any=False):
        digests += parse_images_digests(data)
    return dedupe(digests)


def _extras(sizer: _Sizer, mains: list[str]) -> list[str]:
    """Extra images named by the main images' ``extra_images.json``; their refs (for VEX)."""
    wanted: dict[str, list[str]] = {}
    for data in _read(sizer, mains, "extra_images.json", top_first_any=True):
        try:
            parsed = parse_extra_images_json(data)
        except MirrorError as exc:
            sizer.unsized.append(f"extra_images.json: {exc}")
            continue
        for extra, tag in parsed.items():
            wanted.setdefault(extra, [])
            if tag not in wanted[extra]:
                wanted[extra].append(tag)
    options, refs = sizer.options, []
    for extra in sorted(wanted):
        repo = options.extra_repo(sizer.name, extra)
        sizer.fetcher.resolve_many([(repo, tag) for tag in wanted[extra]])
        for tag in wanted[extra]:
            refs.append(options.ref(repo, tag))
            digest = sizer.fetcher.resolve(repo, tag)
            if digest:
                sizer.record(f"{EXTRA}/{extra}", repo, digest, tag, options.ref(repo, tag))
    return refs


def _vex(sizer: _Sizer, repo: str, refs: Iterable[str]) -> None:
    refs = dedupe(refs)
    fetcher = sizer.fetcher
    fetcher.resolve_many([(repo, vex_tag_for(ref)) for ref in refs])
    for ref in refs:
        tag = vex_tag_for(ref)

        def step(tag: str = tag, ref: str = ref) -> None:
            digest = fetcher.resolve(repo, tag)
            if digest:
                sizer.record("", repo, digest, tag, vex_ref_for(ref))

        _tolerant(sizer, f"VEX image {repo}:{tag}", step)


def size_release_catalog(fetcher: ImageFetcher, options: PullOptions, name: str) -> PackageSize:
    """The size of ``name``'s part of ``package-versions.tar`` (as
    :func:`~d8mirror.pull.release_catalog.pull_release_catalog` pulls it). Reading the channels'
    ``version.json`` needs their small images' layers: the plan fetched them already when the
    package is planned; otherwise they are fetched here (tiny, and the pull needs them)."""
    repo = options.version_repo(name)
    sizer = _Sizer(fetcher, options, name)
    layout = sizer.layout("")
    warnings: list[str] = []
    channels = available_channels(fetcher, options, name)
    tags = list(channels)
    for channel in channels:
        digest = fetcher.resolve(repo, channel)
        if digest is None:
            continue
        sizer.record("", repo, digest, channel, options.ref(repo, channel))
        closure = fetcher.image(repo, digest)
        version = channel_version(fetcher, closure, f"{repo}:{channel}", warnings)
        if version:
            tags.append(version)
    if options.proxy_registry:  # a proxy lists nothing: the pull's own try is enough
        sizer.unsized.append(f"release images of {repo} not among its channels (not listed)")
    else:
        with contextlib.suppress(MirrorError):  # the pull warns; nothing more to size
            tags += fetcher.list_tags(repo)
    recorded = {short for short, _ in layout.entries}
    pending = [t for t in dedupe(tags) if t not in recorded]
    fetcher.resolve_many([(repo, t) for t in pending])
    for tag in pending:
        digest = fetcher.resolve(repo, tag)
        if digest:
            sizer.record("", repo, digest, tag, options.ref(repo, tag))
    return sizer.result(f"{PACKAGES}/{name}/{VERSION}")


# -- totals and free space -------------------------------------------------------------------------
class FreeSpace(BaseModel):
    """Free space of the filesystem holding ``path``."""

    path: str
    free: int
    device: int = Field(description="st_dev: equal devices are one filesystem.")

    @classmethod
    def of(cls, path: Path) -> FreeSpace:
        probe = _existing_parent(path)
        return cls(path=str(path), free=shutil.disk_usage(probe).free, device=os.stat(probe).st_dev)


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class SizingSummary(BaseModel):
    """The sizing's totals, as ``report.json`` keeps them."""

    images: int
    blobs: int = Field(description="Unique config and layer blobs.")
    bytes_total: int = Field(description="Their bytes.")
    bytes_to_download: int = Field(description="Of them, not in the blob store when sized.")
    bundle_bytes: int = Field(description="The archives the pull writes.")
    bundle_free: int | None = None
    tmp_free: int | None = None
    same_filesystem: bool = False
    unsized: list[str] = Field(default_factory=list)


class PullSizing(BaseModel):
    """Every package's size, the catalog's (``package-versions.tar``), totals, free space."""

    packages: list[PackageSize] = Field(default_factory=list)
    catalog: list[PackageSize] = Field(
        default_factory=list, description="Per package, its part of package-versions.tar."
    )
    bundle: FreeSpace | None = None
    tmp: FreeSpace | None = None

    def _all(self) -> list[PackageSize]:
        return [*self.packages, *self.catalog]

    @property
    def blobs(self) -> dict[str, int]:
        """Unique config and layer blobs of the whole pull."""
        out: dict[str, int] = {}
        for size in self._all():
            out.update(size.blobs)
        return out

    @property
    def to_download(self) -> dict[str, int]:
        """Unique blobs not in the blob store: what the pull will download."""
        out: dict[str, int] = {}
        for size in self._all():
            out.update(size.missing)
        return out

    @property
    def still_to_download(self) -> dict[str, int]:
        """Of :attr:`to_download`, what is not on disk yet (the sizing fetched the rest)."""
        early = {d for size in self._all() for d in size.fetched_early}
        return {d: n for d, n in self.to_download.items() if d not in early}

    @property
    def images(self) -> int:
        return sum(s.images for s in self._all())

    @property
    def catalog_archive_bytes(self) -> int:
        """``package-versions.tar``: the catalogs' layouts in one tar."""
        if not any(s.images for s in self.catalog):
            return 0
        # Each catalog's own trailer and record padding are not repeated inside one tar.
        return tar_size(_catalog_members(self.catalog))

    @property
    def bundle_bytes(self) -> int:
        """The archives the pull writes into the bundle dir."""
        return sum(s.archive_bytes for s in self.packages) + self.catalog_archive_bytes

    @property
    def unsized(self) -> list[str]:
        return [f"{s.name}: {note}" for s in self.packages for note in s.unsized]

    def summary(self) -> SizingSummary:
        return SizingSummary(
            images=self.images,
            blobs=len(self.blobs),
            bytes_total=sum(self.blobs.values()),
            bytes_to_download=sum(self.to_download.values()),
            bundle_bytes=self.bundle_bytes,
            bundle_free=self.bundle.free if self.bundle else None,
            tmp_free=self.tmp.free if self.tmp else None,
            same_filesystem=self.same_filesystem(),
            unsized=self.unsized,
        )

    def same_filesystem(self) -> bool:
        return (
            self.bundle is not None
            and self.tmp is not None
            and (self.bundle.device == self.tmp.device)
        )

    def render(self) -> list[str]:
        """The dry-run's size lines: per package, the catalog, the total, free space."""
        lines = [
            _line(f"Size of package '{s.name}'", s.images, s.blobs, s.missing, s.archive_bytes)
            for s in self.packages
        ]
        if self.catalog:
            lines.append(
                _line(
                    "Size of package-versions",
                    sum(s.images for s in self.catalog),
                    {d: n for s in self.catalog for d, n in s.blobs.items()},
                    {d: n for s in self.catalog for d, n in s.missing.items()},
                    self.catalog_archive_bytes,
                )
            )
        lines.append(
            _line(
                "Total size", self.images, self.blobs, self.to_download, self.bundle_bytes, "bundle"
            )
        )
        lines += [f"[dry-run] Not sized: {note}" for note in self.unsized]
        lines += self.render_space()
        return lines

    def render_space(self) -> list[str]:
        if self.bundle is None or self.tmp is None:
            return []
        same = " (same filesystem)" if self.same_filesystem() else ""
        return [
            f"[dry-run] Free space: bundle dir {self.bundle.path}: "
            f"{human_size(self.bundle.free)} ({self.bundle.free} bytes); "
            f"tmp dir {self.tmp.path}: {human_size(self.tmp.free)} ({self.tmp.free} bytes){same}"
        ]


def _catalog_members(catalog: list[PackageSize]) -> dict[str, int]:
    members: dict[str, int] = {}
    for size in catalog:
        members.update(size.members)
    return members


def _line(
    what: str,
    images: int,
    blobs: dict[str, int],
    missing: dict[str, int],
    archive: int,
    archive_word: str = "archive",
) -> str:
    total, todo = sum(blobs.values()), sum(missing.values())
    return (
        f"[dry-run] {what}: {images} images, {len(blobs)} unique blobs, "
        f"{human_size(todo)} to download ({todo} bytes; {human_size(total)} in all), "
        f"{archive_word} {human_size(archive)} ({archive} bytes)"
    )


def margin_for(needed: int) -> int:
    """The space check's margin over ``needed`` bytes: 1% plus 64 MiB."""
    return int(needed * MARGIN_FRACTION) + MARGIN_BYTES


MARGIN_TEXT = "1% + 64 MiB"


def check_space(sizing: PullSizing) -> None:
    """Raise :class:`InsufficientSpaceError` when the blobs still to download (into the
    working dir's blob store) and the archives to write (into the bundle dir) do not fit,
    each filesystem with the margin of :func:`margin_for`; one filesystem holding both
    needs their sum."""
    if sizing.bundle is None or sizing.tmp is None:
        return
    download = sum(sizing.still_to_download.values())
    archives = sizing.bundle_bytes
    if sizing.same_filesystem():
        needs = [("bundle and tmp dirs", sizing.bundle, download + archives)]
    else:
        needs = [("tmp dir", sizing.tmp, download), ("bundle dir", sizing.bundle, archives)]
    with_margin = [
        (role, space.path, needed + margin_for(needed), space.free) for role, space, needed in needs
    ]
    if any(needed > free for _, _, needed, free in with_margin):
        raise InsufficientSpaceError(with_margin, MARGIN_TEXT)


def measure_space(sizing: PullSizing, bundle_dir: Path, tmp_dir: Path) -> PullSizing:
    """``sizing`` with the free space of the bundle and tmp dirs' filesystems."""
    return sizing.model_copy(
        update={"bundle": FreeSpace.of(bundle_dir), "tmp": FreeSpace.of(tmp_dir)}
    )
