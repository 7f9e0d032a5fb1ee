"""The pull side of a delta bundle (``--delta-from RECEIPT``): which blobs it leaves out.

A delta pull is given the base receipt's blob set (:class:`BaseBlobs`). Its fetchers download
no config or layer the receipt lists, its layouts link none of them (so no archive packs
them), and its sizing counts none of them; every manifest (index children included) is still
fetched and written. A few listed blobs must be *read* to plan the pull: the layers holding a
channel image's ``version.json`` and a main image's ``images_digests.json`` /
``extra_images.json``. They are fetched into the blob store when it lacks them (a kept
``--tmp-dir`` usually holds them) and recorded by :meth:`BaseBlobs.read_anyway`, but still not
packed.

After packing, :func:`omitted_blobs` lists what the layouts left out, layout by layout, as
:class:`~d8mirror.delta.OmittedBlob` entries whose repository is the layout's path relative to
the bundle root (``packages/<name>``, ``packages/<name>/version``,
``packages/<name>/extra/<x>``: the tar paths a push routes by).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from d8mirror.delta import DELTA_FILE, Delta, OmittedBlob, read_delta, write_delta
from d8mirror.errors import ReceiptError
from d8mirror.files import os_error
from d8mirror.layout import INDEX_FILE, Layout
from d8mirror.names import EXTRA, PACKAGES, VERSION
from d8mirror.sealed import sidecar_of


class BaseBlobs:
    """The base receipt's blobs (never fetched for packing, never packed) and, per run, those
    the pull still had to download to read metadata from them. Thread-safe."""

    def __init__(self, blobs: Iterable[str], receipt_sha256: str) -> None:
        self.blobs = frozenset(blobs)
        self.receipt_sha256 = receipt_sha256
        self._lock = threading.Lock()
        self._read: dict[str, int] = {}

    def omits(self, digest: str) -> bool:
        return digest in self.blobs

    def read_anyway(self, digest: str, size: int) -> None:
        """``digest`` (listed by the receipt) was downloaded to read a file from it."""
        with self._lock:
            self._read[digest] = size

    @property
    def read(self) -> dict[str, int]:
        """Receipt blobs downloaded to read metadata (digest → size)."""
        with self._lock:
            return dict(self._read)


def package_repositories(name: str, work_dir: Path) -> list[tuple[str, Path]]:
    """(repository relative to the bundle root, layout dir) of a package's working dir."""
    root = f"{PACKAGES}/{name}"
    found = [(root, work_dir), (f"{root}/{VERSION}", work_dir / VERSION)]
    extra = work_dir / EXTRA
    if extra.is_dir():
        found += [(f"{root}/{EXTRA}/{p.name}", p) for p in sorted(extra.iterdir()) if p.is_dir()]
    return found


def catalog_repository(name: str, layout_dir: Path) -> tuple[str, Path]:
    """``package-versions.tar``'s part of package ``name``: ``packages/<name>/version``."""
    return f"{PACKAGES}/{name}/{VERSION}", layout_dir


def omitted_blobs(layouts: Iterable[tuple[str, Path]], base: frozenset[str]) -> list[OmittedBlob]:
    """Every blob the given layouts' images need, that the receipt lists and the layout does
    not hold, with its size and the layout's repository (one entry per layout and digest)."""
    out: list[OmittedBlob] = []
    for repository, path in layouts:
        if not (path / INDEX_FILE).is_file():
            continue
        layout = Layout.open(path)
        seen: set[str] = set()
        for entry in layout.entries():
            for digest, size in layout.closure(entry.digest):
                if digest in seen or digest not in base:
                    continue
                seen.add(digest)
                if not layout.blob_path(digest).is_file():
                    out.append(OmittedBlob(digest, size, repository))
    return out


def write_bundle_delta(
    bundle_dir: Path,
    base: BaseBlobs,
    layouts: Iterable[tuple[str, Path]],
    *,
    merge: bool = False,
) -> Delta:
    """Write ``<bundle>/delta.json`` (+ sidecar) listing what ``layouts`` left out. With
    ``merge`` (one package re-pulled into a bundle) the bundle's delta of the same base keeps
    its other entries; a delta of another base is refused (ReceiptError)."""
    omitted = omitted_blobs(layouts, base.blobs)
    if merge:
        earlier = read_delta(bundle_dir)
        if earlier is not None and earlier.base_receipt_sha256 != base.receipt_sha256:
            raise ReceiptError(
                f"{bundle_dir / DELTA_FILE} is a delta from another receipt (SHA-256 "
                f"{earlier.base_receipt_sha256}, this pull's is {base.receipt_sha256}): pull "
                "the whole bundle again from one receipt"
            )
        if earlier is not None:
            omitted = [*omitted, *earlier.omitted]
    delta = Delta.build(base.receipt_sha256, omitted)
    write_delta(bundle_dir, delta)
    return delta


def remove_delta(bundle_dir: Path) -> bool:
    """Remove a ``delta.json`` (and sidecar) an earlier delta pull left in ``bundle_dir``: a
    full pull into it must not look like a delta. True when one was there."""
    path = bundle_dir / DELTA_FILE
    found = False
    for stale in (path, sidecar_of(path)):
        try:
            stale.unlink()
            found = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error(exc, stale, "remove") from exc
    return found
