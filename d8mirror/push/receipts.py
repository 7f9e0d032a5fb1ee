"""The receipt a push writes (``push --receipt-out``): what the target held for packages before,
with what this push verified (:mod:`d8mirror.receipt`).

What this push verified: every tag of every layout of the bundle's ``packages`` tree, with the
config and layer digests of its image (an index's children too; a delta bundle's omitted blobs
too, since its manifests name them and the push checked the target holds them), and the
``packages:<name>`` discovery tags, recorded as images of repository ``packages`` with the tiny
image's two blobs, as a scan of the target records them. Platform, module and plugin layouts are
not packages and are not recorded.

What the target held before comes from the previous receipt (``--receipt-in``, read through its
sidecar and checked to describe the same packages root) or, without one, from a scan of the
target (:mod:`d8mirror.receipt_scan`) made after the push has verified. A scan after the push
gives what one before it would, merged with the push's images: the push deletes nothing, and a
tag it moved is recorded with its new digest either way. It costs a single pass, only when the
push succeeded, and nothing before the first write.
"""

from __future__ import annotations

from pathlib import Path

from d8mirror.names import PACKAGES
from d8mirror.push import tinyimage
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from d8mirror.push.summary import PushResult
from d8mirror.receipt import RECEIPT_FILE, HeldImage, Receipt
from d8mirror.receipt_scan import Holdings


def pushed_holdings(result: PushResult) -> Holdings:
    """The packages' images and blobs a (verified) push wrote or found in place."""
    layouts = [r for r in result.layouts if is_package_layout(r.layout)]
    images = [HeldImage(r.layout, tag, digest) for r in layouts for tag, digest in r.tags]
    blobs = {blob for r in layouts for blob in r.blobs}
    discovery = [d for d in result.discovery if d.kind == PACKAGES]
    images += [HeldImage(PACKAGES, d.tag, d.digest) for d in discovery]
    if discovery:
        blobs |= {digest for digest, _data in tinyimage.build(DISCOVERY_LABEL).blobs}
    return Holdings(tuple(sorted(images)), frozenset(blobs))


def is_package_layout(layout: str) -> bool:
    """Whether a layout's path in the bundle is a package's (``packages/<name>…``)."""
    return layout.startswith(PACKAGES + "/")


def push_receipt(result: PushResult, before: Receipt, root: str, bundle_id: str) -> Receipt:
    """``before`` ∪ what ``result`` verified, with ``bundle_id`` among the bundles applied; an
    image the push moved replaces the held one."""
    held = pushed_holdings(result)
    return before.merged(held.images, held.blobs, [bundle_id], root=root)


def receipt_file(path: Path) -> Path:
    """Where ``--receipt-out PATH`` writes: PATH, or ``PATH/receipt.json`` for a directory."""
    return path / RECEIPT_FILE if path.is_dir() else path
