"""``d8mirror upload <bundle> <url>`` and ``d8mirror download <url> <dir>``: the upload-bundle
and download-bundle flows in this process. Credentials: S3 from the AWS chain
(AWS_ACCESS_KEY_ID…, AWS_PROFILE) or ``--credentials-block``; registries from
D8_MIRROR_REGISTRY_LOGIN/PASSWORD or docker config."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d8mirror.transfer import parse_transfer_url

from .. import flags, progress_display

if TYPE_CHECKING:
    from tasks.transfer_models import TransferSummary

    from ..session import Session


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3 endpoint of an S3-compatible store")
    parser.add_argument("--region", help="S3 region")
    flags.add_tls(parser)
    flags.add_credentials_block(parser)
    parser.add_argument(
        "--part-size-mib",
        type=int,
        default=64,
        help="S3 part size / OCI chunk size in MiB (default 64)",
    )
    progress_display.add_flags(parser)
    parser.add_argument("--concurrency", type=int, default=4, help="S3 parts in flight per file")
    parser.add_argument("--file-concurrency", type=int, default=2, help="files at once")


def register(subparsers: Any) -> None:
    """Add ``upload`` and ``download`` to the d8mirror command line."""
    upload = subparsers.add_parser("upload", help="upload a bundle to s3:// or oci://")
    upload.add_argument("bundle", help="bundle directory")
    upload.add_argument("url", help="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPO:TAG")
    _target_flags(upload)
    upload.set_defaults(run=run_upload)

    download = subparsers.add_parser("download", help="download a bundle, verifying every file")
    download.add_argument("url", help="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPO:TAG")
    download.add_argument("dir", help="destination directory")
    _target_flags(download)
    download.set_defaults(run=run_download)


def target_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~tasks.transfer_models.TransferTarget` fields of the parsed flags (a bad
    URL is a ConfigError, before Prefect starts)."""
    parse_transfer_url(args.url)
    return {
        "url": args.url,
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "part_size_mib": args.part_size_mib,
        "concurrency": args.concurrency,
        "file_concurrency": args.file_concurrency,
        **flags.registry_access(args),
    }


def run_upload(args: argparse.Namespace, session: Session) -> int:
    fields = target_fields(args)
    session.start("flows.transfer")
    from flows.transfer import upload_bundle
    from tasks.transfer_models import UploadParameters

    params = UploadParameters(bundle_dir=str(Path(args.bundle)), **fields)
    return _run(session, args, "upload", "to", lambda: upload_bundle(params))


def run_download(args: argparse.Namespace, session: Session) -> int:
    fields = target_fields(args)
    session.start("flows.transfer")
    from flows.transfer import download_bundle
    from tasks.transfer_models import DownloadParameters

    params = DownloadParameters(dest_dir=str(Path(args.dir)), **fields)
    return _run(session, args, "download", "from", lambda: download_bundle(params))


def _run(
    session: Session,
    args: argparse.Namespace,
    verb: str,
    preposition: str,
    transfer: Callable[[], TransferSummary],
) -> int:
    """Run one transfer flow; its one-line result (TransferFailed: told by app.main.run)."""
    with session.running(), progress_display.shown(args):
        summary = transfer()
    print(f"{verb}ed {summary.files} file(s) {preposition} {summary.url}: {summary.statuses}")
    return 0
