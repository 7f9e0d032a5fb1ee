"""``d8mirror import SOURCE REGISTRY --receipt PATH [--receipt-upload-to URL]``: the
import-bundle flow in this process. SOURCE is a bundle directory, a directory of bundles,
``s3://BUCKET/PREFIX`` or ``oci://REGISTRY/REPO:TAG``. The target's login: ``-u/-p`` (or
D8_MIRROR_REGISTRY_LOGIN/PASSWORD), docker config, ``--credentials-block``; the source store's:
the AWS chain or ``--source-credentials-block``. The TLS flags apply to both."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from d8mirror.names import DEFAULT_MODULES_PATH, DEFAULT_PACKAGES_PATH
from d8mirror.push.routing import parse_target
from d8mirror.transfer import parse_transfer_url

from .. import flags, progress_display

if TYPE_CHECKING:
    from tasks.import_models import ImportParameters

    from ..session import Session


def register(subparsers: Any) -> None:
    """Add ``import`` to the d8mirror command line."""
    parser = subparsers.add_parser(
        "import",
        help="import pending bundles (dir, s3://, oci://) into a registry and write the receipt",
    )
    parser.add_argument("source", help="bundle dir, dir of bundles, s3://BUCKET/PREFIX or oci://…")
    parser.add_argument("registry", help="target host[:port]/path")
    parser.add_argument(
        "--receipt", required=True, help="the site's receipt.json: read, then rewritten"
    )
    parser.add_argument(
        "--receipt-upload-to",
        help="upload the receipt to s3://BUCKET/PREFIX[/receipt.json] or oci://",
    )
    parser.add_argument(
        "--receipt-omit-host", action="store_true", help="keep the registry host out of it"
    )
    flags.add_target_login(parser)
    flags.add_credentials_block(parser)
    flags.add_tls(parser)
    parser.add_argument("--endpoint-url", help="S3 endpoint of an S3-compatible store")
    parser.add_argument("--region", help="S3 region")
    parser.add_argument(
        "--source-credentials-block", help="Prefect Secret block with the S3 keys (or OCI login)"
    )
    parser.add_argument(
        "--download-dir", help="where uploads are downloaded (default: beside the receipt)"
    )
    parser.add_argument(
        "--keep-downloads", action="store_true", help="keep downloaded bundles once imported"
    )
    parser.add_argument("--packages-path-suffix", default=DEFAULT_PACKAGES_PATH)
    parser.add_argument("--modules-path-suffix", default=DEFAULT_MODULES_PATH)
    parser.add_argument("--concurrency", type=int, default=4, help="layouts at once")
    parser.add_argument("--blob-workers", type=int, default=4, help="blobs at once per layout")
    progress_display.add_flags(parser)
    parser.set_defaults(run=run)


def parameters(args: argparse.Namespace) -> ImportParameters:
    """The flow parameters of ``import``, checked (ConfigError before Prefect starts)."""
    from tasks.import_models import ImportParameters

    parse_target(args.registry)
    if args.source.startswith(("s3://", "oci://")):
        parse_transfer_url(args.source)
    if args.receipt_upload_to:
        parse_transfer_url(args.receipt_upload_to)
    flags.target_login(args)
    access = flags.registry_access(args)
    source_access = {
        **access,
        "credentials_block": args.source_credentials_block,
        "endpoint_url": args.endpoint_url,
        "region": args.region,
    }
    params = ImportParameters(
        source=args.source,
        registry=args.registry,
        receipt=args.receipt,
        receipt_upload_to=args.receipt_upload_to,
        receipt_omit_host=args.receipt_omit_host,
        source_access=source_access,
        download_dir=args.download_dir,
        keep_downloads=args.keep_downloads,
        packages_path_suffix=args.packages_path_suffix,
        modules_path_suffix=args.modules_path_suffix,
        concurrency=args.concurrency,
        blob_workers=args.blob_workers,
        **access,
    )
    params.push_parameters(params.receipt_path().parent).router()
    return params


def run(args: argparse.Namespace, session: Session) -> int:
    params = parameters(args)  # bad usage fails here, before Prefect starts
    session.give_credentials(parse_target(params.registry).registry, flags.target_login(args))
    session.start("flows.importing")
    from flows.importing import run_import
    from tasks.runtime import stop_requested

    from ..signals import stop_on_signals_hook

    with session.running(graceful_stop=True), progress_display.shown(args):
        result = run_import(params, on_running=[stop_on_signals_hook])  # ImportFailed: app.main
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts().items())) or "none pending"
    print(f"import from {params.source}: {counts}; receipt {params.receipt}")
    if result.receipt_uploaded_to:
        print(f"receipt uploaded to {result.receipt_uploaded_to}")
    if stop_requested():
        print("Operation cancelled by user: rerun the import to complete it", file=sys.stderr)
    return 0
