"""Carry bundles across the air gap: S3-compatible object storage or an OCI artifact.

Public surface::

    parse_transfer_url(url) -> S3Url | OciUrl                       (urls.py)
    TransferManifest, FileEntry, build_manifest, MANIFEST_NAME      (manifest.py)
    FileResult                                                      (results.py)
    s3: S3Settings, S3Credentials, make_client, upload_file, put_manifest, read_manifest,
        check_complete, download_file, …
    oci_artifact: upload_file, commit, read_artifact, download_file, …
    errors: TransferError, IncompleteUploadError, TransferIntegrityError, …

One file at a time, plus the transfer manifest: the flows of ``flows/transfer.py`` compose
them (a bounded fan-out over the files). Every file is checked end to end by SHA-256 against
the transfer manifest, which is written last on upload and read first on download.
"""

from .errors import (
    IncompleteUploadError,
    StorageAccessError,
    StorageNetworkError,
    StorageUnavailableError,
    TransferError,
    TransferIntegrityError,
)
from .manifest import MANIFEST_NAME, FileEntry, TransferManifest, build_manifest
from .results import FileResult
from .urls import OciUrl, S3Url, TransferUrl, parse_transfer_url

__all__ = [
    "MANIFEST_NAME",
    "FileEntry",
    "FileResult",
    "IncompleteUploadError",
    "OciUrl",
    "S3Url",
    "StorageAccessError",
    "StorageNetworkError",
    "StorageUnavailableError",
    "TransferError",
    "TransferIntegrityError",
    "TransferManifest",
    "TransferUrl",
    "build_manifest",
    "parse_transfer_url",
]
