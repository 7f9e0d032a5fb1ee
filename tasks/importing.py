"""Prefect tasks of import-bundle: the site's receipt, the uploads pending at the source, a
bundle's id. Thin wrappers over :mod:`d8mirror.receipt`, :mod:`d8mirror.delta` and the
transfer code (clients and credentials from :mod:`tasks.transfer`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task

from d8mirror.bundle.discovery import is_package_file
from d8mirror.delta import bundle_id
from d8mirror.errors import ConfigError
from d8mirror.receipt import read_receipt
from d8mirror.sealed import sidecar_of
from d8mirror.transfer import OciUrl, S3Url, parse_transfer_url, s3

from .import_models import ImportParameters, Upload
from .policy import TRANSIENT_RETRIES
from .transfer import connect, s3_client
from .transfer_models import TransferTarget


@task(name="read-site-receipt")
def applied_bundles_task(receipt: str) -> list[str]:
    """The ids of the bundles the site's receipt lists (its sidecar checked first: a tampered
    receipt fails the run before anything is pushed); none when there is no receipt yet."""
    path = Path(receipt)
    if not path.is_file() and not sidecar_of(path).is_file():
        return []
    held, _ = read_receipt(path)
    return sorted(held.bundles)


@task(name="find-uploads", **TRANSIENT_RETRIES)
def find_uploads_task(params: ImportParameters) -> list[Upload]:
    """The bundles at ``params.source``, in name order (ids sort by time)."""
    if params.source.startswith(("s3://", "oci://")):
        return _remote_uploads(params)
    return _local_bundles(Path(params.source))


def _is_bundle_dir(path: Path) -> bool:
    return path.is_dir() and any(is_package_file(p.name) for p in path.iterdir())


def _local_bundles(source: Path) -> list[Upload]:
    """The directory itself when it holds archives, else each subdirectory that does."""
    if not source.is_dir():
        raise ConfigError(
            f"import source {source} is not a directory: give a bundle directory, a directory "
            "of bundles, s3://BUCKET/PREFIX or oci://REGISTRY/REPOSITORY:TAG"
        )
    if _is_bundle_dir(source):
        return [Upload(name=source.resolve().name, location=str(source), remote=False)]
    return [
        Upload(name=child.name, location=str(child), remote=False)
        for child in sorted(source.iterdir())
        if not child.name.startswith(".") and _is_bundle_dir(child)
    ]


def _remote_uploads(params: ImportParameters) -> list[Upload]:
    """One OCI artifact; an S3 prefix holding an upload; or one upload per sub-prefix (one
    without its transfer manifest is listed as incomplete: still uploading, or abandoned)."""
    target = parse_transfer_url(params.source)
    if isinstance(target, OciUrl):
        return [Upload(name=f"{target.repository}-{target.tag}", location=str(target), remote=True)]
    access = TransferTarget(url=params.source, **params.source_access.model_dump())
    connect(access)
    client = s3_client(access)
    if s3.has_manifest(client, target):
        name = target.prefix.rsplit("/", 1)[-1] or target.bucket
        return [Upload(name=name, location=str(target), remote=True)]
    uploads = []
    for name in s3.child_prefixes(client, target):
        child = S3Url(target.bucket, target.key(name))
        complete = s3.has_manifest(client, child)
        uploads.append(Upload(name=name, location=str(child), remote=True, complete=complete))
    return uploads


@task(name="bundle-id")
def bundle_id_task(bundle_dir: str) -> str:
    """The bundle's id: its delta's, or ``full-…`` from its archives' checksums."""
    return bundle_id(Path(bundle_dir))


@task(name="remove-download")
def remove_download_task(bundle_dir: str) -> None:
    """A downloaded bundle, once imported (its id is in the receipt: never needed again)."""
    shutil.rmtree(bundle_dir, ignore_errors=True)
