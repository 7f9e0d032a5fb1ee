"""receipt-scan: write the receipt of what a target registry holds for packages.

    register the target ─▶ scan (discovery tags ─▶ repositories ─▶ tags ─▶ manifests;
    :mod:`d8mirror.receipt_scan`) ─▶ receipt.json + .sha256 ─▶ summary artifact

It bootstraps the nightly loop for a site filled by ``d8 mirror push`` or by hand: the receipt
goes out of the gap, and the next pull builds a delta against it. Nothing is written to the
registry. The CLI's ``d8mirror receipt`` runs this flow in its own process.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from d8mirror.receipt import write_receipt
from d8mirror.receipt_scan import receipt_root, scan_receipt
from tasks import runtime
from tasks.credentials import target_credentials
from tasks.policy import TRANSIENT_RETRIES
from tasks.receipt_scan import ReceiptScanParameters

__all__ = ["receipt_scan", "run_receipt_scan"]


@task(name="scan-target", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def scan_target_task(params: ReceiptScanParameters) -> str:
    """Scan the target and write its receipt; the path written."""
    logger = get_run_logger()
    target = params.target()
    receipt = scan_receipt(
        runtime.client_for(target.registry),
        target,
        params.router(),
        omit_host=params.receipt_omit_host,
        workers=params.workers,
        catalog=params.catalog,
        warn=logger.warning,
    )
    path = params.output_file()
    hex_digest = write_receipt(receipt, path)
    logger.info(
        "Receipt %s (SHA-256 %s) of %s: %d images in %d repositories, %d blobs",
        path,
        hex_digest,
        receipt.root,
        len(receipt.images),
        len(receipt.repositories),
        len(receipt.blobs),
    )
    return str(path)


@flow(name="receipt-scan", log_prints=True)
def receipt_scan(params: ReceiptScanParameters) -> str:
    """Scan the target registry and write its receipt; see the module docstring."""
    registry = params.target().registry
    credentials = runtime.given_credentials(registry) or target_credentials(
        registry, params.credentials_block
    )
    runtime.register_endpoint(registry, credentials=credentials, tls=params.tls())
    path = scan_target_task(params)
    root = receipt_root(params.target(), params.router(), omit_host=params.receipt_omit_host)
    create_markdown_artifact(
        f"Receipt of `{root}` written to `{path}`",
        key="receipt-scan",
        description="d8mirror receipt of the target registry",
    )
    return path


def run_receipt_scan(params: ReceiptScanParameters) -> str:
    """Run the flow in this process (explicit credentials were given to :mod:`tasks.runtime`
    beforehand: the CLI's session does it)."""
    try:
        return receipt_scan(params)
    finally:
        runtime.close_clients()
