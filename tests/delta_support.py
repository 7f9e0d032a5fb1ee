"""Helpers of the delta tests (not a test module): a receipt of what a bundle holds, as the
site's ``push --receipt-out`` would write it after pushing that bundle."""

from __future__ import annotations

import tarfile
from collections.abc import Collection
from pathlib import Path

from d8mirror.layout import Layout
from d8mirror.receipt import HeldImage, Receipt


def _layouts(
    bundle: Path, into: Path, only: Collection[str] | None = None
) -> dict[tuple[str, str], Path]:
    """(archive, layout path relative to the bundle root) → the extracted layout dir (of the
    archives named ``only``, or all)."""
    found: dict[tuple[str, str], Path] = {}
    for archive in sorted(bundle.glob("*.tar")):
        if only is not None and archive.name not in only:
            continue
        dest = into / archive.name
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        for index in sorted(dest.rglob("index.json")):
            found[(archive.name, str(index.parent.relative_to(dest)))] = index.parent
    return found


def receipt_of_bundle(bundle: Path, into: Path, only: Collection[str] | None = None) -> Receipt:
    """What a site holds after pushing ``bundle`` (its archives named ``only``, or all): every
    layout's tags, and every config and layer blob of their images (a stand-in for
    ``push --receipt-out``)."""
    images: list[HeldImage] = []
    blobs: set[str] = set()
    for (_, repository), path in _layouts(bundle, into, only).items():
        layout = Layout.open(path)
        for entry in layout.entries():
            images.append(HeldImage(repository, entry.short_tag or "", entry.digest))
            blobs |= {d for d, _ in layout.closure(entry.digest)[1:]}
    return Receipt.build("127.0.0.1/site/packages", images, blobs)
