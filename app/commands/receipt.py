"""``d8mirror receipt <registry> -o PATH``: write the receipt of what a target registry holds
for packages, by scanning it (the receipt-scan flow, in this process). Nothing is written to the
registry."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from d8mirror.names import DEFAULT_PACKAGES_PATH

from .. import flags

if TYPE_CHECKING:
    from tasks.receipt_scan import ReceiptScanParameters

    from ..session import Session


def register(subparsers: Any) -> None:
    receipt = subparsers.add_parser(
        "receipt", help="write the receipt of what a target registry holds for packages"
    )
    receipt.add_argument("registry", help="target host[:port]/path, as given to push")
    receipt.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help="receipt file to write (+ PATH.sha256); a directory: PATH/receipt.json",
    )
    flags.add_target_login(receipt)
    receipt.add_argument("--packages-path-suffix", default=DEFAULT_PACKAGES_PATH)
    receipt.add_argument(
        "--receipt-omit-host",
        action="store_true",
        help="keep the registry host out of the receipt",
    )
    receipt.add_argument("--workers", type=int, default=8, help="registry requests at once")
    receipt.add_argument(
        "--no-catalog",
        action="store_true",
        help="find extra images from each main image's extra_images.json, not the catalog",
    )
    flags.add_tls(receipt)
    flags.add_credentials_block(receipt)
    receipt.set_defaults(run=run)


def parameters(args: argparse.Namespace) -> ReceiptScanParameters:
    """The flow parameters, checked (ConfigError before Prefect starts)."""
    from tasks.receipt_scan import ReceiptScanParameters

    flags.target_login(args)
    params = ReceiptScanParameters(
        registry=args.registry,
        output=args.output,
        packages_path_suffix=args.packages_path_suffix,
        receipt_omit_host=args.receipt_omit_host,
        workers=args.workers,
        catalog=not args.no_catalog,
        **flags.registry_access(args),
    )
    params.target()
    params.router()
    return params


def run(args: argparse.Namespace, session: Session) -> int:
    params = parameters(args)
    session.give_credentials(params.target().registry, flags.target_login(args))
    session.start("flows.receipt")
    from flows.receipt import run_receipt_scan

    with session.running():
        path = run_receipt_scan(params)
    print(f"Receipt written to {path}")
    return 0
