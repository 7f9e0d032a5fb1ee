"""Prefect tasks of the push's receipt (``push --receipt-out``): thin wrappers over
:mod:`d8mirror.push.receipts` and :mod:`d8mirror.receipt_scan`. The previous receipt is read
(sidecar checked) before the push writes anything, so a tampered one stops the push early; the
new receipt is written only after the push verified."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from d8mirror.delta import push_bundle_id
from d8mirror.push.receipts import push_receipt, receipt_file
from d8mirror.push.summary import PushResult
from d8mirror.receipt import Receipt, read_receipt, write_receipt
from d8mirror.receipt_scan import check_same_root, receipt_root, scan_receipt
from tasks.policy import TRANSIENT_RETRIES
from tasks.push_models import PushParameters
from tasks.runtime import client_for


@task(name="read-previous-receipt", cache_policy=NO_CACHE)
def read_previous_receipt_task(params: PushParameters) -> Receipt | None:
    """The receipt given with ``--receipt-in``, verified by its sidecar and checked to describe
    this target's packages root; None when none was given."""
    if not params.receipt_in:
        return None
    receipt, hex_digest = read_receipt(Path(params.receipt_in))
    check_same_root(receipt, _root(params), where=params.receipt_in)
    get_run_logger().info(
        "Previous receipt %s (SHA-256 %s): %d images, %d blobs",
        params.receipt_in,
        hex_digest,
        len(receipt.images),
        len(receipt.blobs),
    )
    return receipt


def read_bundle_id(params: PushParameters) -> str:
    """The pushed bundle's id when its sidecars tell it (no archive is hashed); ``""`` when an
    archive has no ``.sha256`` sidecar (a bundle written by ``d8 mirror``). A plain call, not
    a task: it reads a few small files, and a task run would cost every push more than that."""
    bundle = Path(params.bundle_dir) if params.bundle_dir else None
    return push_bundle_id(bundle, params.archives(), hash_missing=False)


@task(name="write-push-receipt", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def write_push_receipt_task(
    params: PushParameters, result: PushResult, previous: Receipt | None
) -> tuple[str, str]:
    """Write the receipt of a verified push: ``previous`` (else a scan of the target) ∪ what
    the push verified; (path written, bundle id)."""
    assert params.receipt_out is not None
    logger = get_run_logger()
    archives = params.archives()
    bundle = Path(params.bundle_dir) if params.bundle_dir else None
    bundle_id = push_bundle_id(bundle, archives)
    root = _root(params)
    if previous is None:
        logger.info("Scanning %s for what it holds for packages", root)
        target = params.target()
        previous = scan_receipt(
            client_for(target.registry), target, params.router(), warn=logger.warning
        )
    receipt = push_receipt(result, previous, root, bundle_id)
    path = receipt_file(Path(params.receipt_out))
    hex_digest = write_receipt(receipt, path)
    logger.info(
        "Receipt %s (SHA-256 %s): %d images, %d blobs, bundles %s",
        path,
        hex_digest,
        len(receipt.images),
        len(receipt.blobs),
        ", ".join(sorted(receipt.bundles)),
    )
    return str(path), bundle_id


def _root(params: PushParameters) -> str:
    return receipt_root(params.target(), params.router(), omit_host=params.receipt_omit_host)
