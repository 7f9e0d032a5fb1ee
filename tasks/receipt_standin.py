"""STAND-IN (helper "import"): the "receipt" helper owns writing the receipt after a push
(``--receipt-in/--receipt-out``). This minimal version exists only so the import flow can be
tested on its own branch; the lead drops this module and its one call in flows/push.py when
merging the real implementation.

The receipt written: the previous receipt (``receipt_in``, when it exists) ∪ the package tags
this push verified (no blobs), with the bundle's id added to ``bundles``.
"""

from __future__ import annotations

from pathlib import Path

from d8mirror.delta import bundle_id
from d8mirror.push.summary import PushResult
from d8mirror.receipt import HeldImage, Receipt, read_receipt, write_receipt

from .push_models import PushParameters


def write_receipt_after_push(params: PushParameters, result: PushResult) -> PushResult:
    """``result`` with its bundle id and the receipt path (written when ``receipt_out``)."""
    if not params.bundle_dir:
        return result
    identity = bundle_id(Path(params.bundle_dir))
    if not params.receipt_out or not result.ok or result.cancelled:
        return result.model_copy(update={"bundle_id": identity})
    target = params.target()
    root = params.router().packages_index(target)
    prefix = f"{root.path}/"
    images = [
        HeldImage(layout.repository.removeprefix(f"{target.path}/"), tag, digest)
        for layout in result.layouts
        if layout.repository.startswith(prefix)
        for tag, digest in layout.tags
    ]
    shown_root = target.path if params.receipt_omit_host else str(target)
    previous = Path(params.receipt_in) if params.receipt_in else None
    if previous is not None and previous.is_file():
        receipt, _ = read_receipt(previous)
        new = receipt.merged(images, bundles=[identity], root=shown_root)
    else:
        new = Receipt.build(shown_root, images, bundles=[identity])
    write_receipt(new, Path(params.receipt_out))
    return result.model_copy(update={"bundle_id": identity, "receipt": params.receipt_out})
