"""``upload``, ``download`` and ``verify`` subcommands (register with ``register(subparsers)``).

``verify`` is pure core and starts no Prefect. ``upload``/``download`` run the upload-bundle
and download-bundle flows in this process; Prefect and the flows are imported lazily inside the
handlers. Credentials: S3 from the AWS chain (AWS_ACCESS_KEY_ID…, AWS_PROFILE) or
``--credentials-block``; registries from D8_MIRROR_REGISTRY_LOGIN/PASSWORD or docker config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from d8mirror.transfer import parse_transfer_url
from d8mirror.verify import verify_bundle


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3 endpoint of an S3-compatible store")
    parser.add_argument("--region", help="S3 region")
    parser.add_argument("--insecure", action="store_true", help="OCI: plain HTTP to the registry")
    parser.add_argument("--tls-skip-verify", action="store_true",
                        help="do not verify TLS certificates")
    parser.add_argument("--ca-file", help="extra CA bundle (PEM) to trust")
    parser.add_argument("--credentials-block", help="Prefect Secret block with the credentials")
    parser.add_argument("--part-size-mib", type=int, default=64,
                        help="S3 part size / OCI chunk size in MiB (default 64)")
    parser.add_argument("--concurrency", type=int, default=4, help="S3 parts in flight per file")
    parser.add_argument("--file-concurrency", type=int, default=2, help="files at once")


def register(subparsers: Any) -> None:
    """Add ``upload``, ``download`` and ``verify`` to the d8mirror command line."""
    upload = subparsers.add_parser("upload", help="upload a bundle to s3:// or oci://")
    upload.add_argument("bundle", help="bundle directory")
    upload.add_argument("url", help="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPO:TAG")
    _target_flags(upload)
    upload.set_defaults(handler=run_upload_command)

    download = subparsers.add_parser("download", help="download a bundle, verifying every file")
    download.add_argument("url", help="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPO:TAG")
    download.add_argument("dir", help="destination directory")
    _target_flags(download)
    download.set_defaults(handler=run_download_command)

    verify = subparsers.add_parser("verify", help="verify a bundle directory offline")
    verify.add_argument("bundle", help="bundle directory")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=run_verify_command)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    parse_transfer_url(args.url)  # ConfigError (exit 1) before Prefect starts
    return {"url": args.url, "endpoint_url": args.endpoint_url, "region": args.region,
            "insecure": args.insecure, "tls_skip_verify": args.tls_skip_verify,
            "ca_file": args.ca_file, "credentials_block": args.credentials_block,
            "part_size_mib": args.part_size_mib, "concurrency": args.concurrency,
            "file_concurrency": args.file_concurrency}


def run_upload_command(args: argparse.Namespace) -> int:
    common = _common(args)
    from flows.transfer import TransferFailed, upload_bundle
    from tasks.transfer_models import UploadParameters

    try:
        summary = upload_bundle(UploadParameters(bundle_dir=str(Path(args.bundle)), **common))
    except TransferFailed as exc:
        print(f"upload failed: {exc}", file=sys.stderr)
        return 1
    print(f"uploaded {summary.files} file(s) to {summary.url}: {summary.statuses}")
    return 0


def run_download_command(args: argparse.Namespace) -> int:
    common = _common(args)
    from flows.transfer import TransferFailed, download_bundle
    from tasks.transfer_models import DownloadParameters

    try:
        summary = download_bundle(DownloadParameters(dest_dir=str(Path(args.dir)), **common))
    except TransferFailed as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    print(f"downloaded {summary.files} file(s) from {summary.url}: {summary.statuses}")
    return 0


def run_verify_command(args: argparse.Namespace) -> int:
    report = verify_bundle(Path(args.bundle))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.verdict())
    return 0 if report.ok else 1
