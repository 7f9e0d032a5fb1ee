"""Typed errors of the air-gap transfer (object storage and OCI artifacts).

    TransferError (MirrorError)           anything that stops an upload or a download
    ├── IncompleteUploadError             no transfer manifest, or a listed file is missing
    │                                     (never retried: upload the bundle again)
    ├── TransferIntegrityError            bytes do not match the manifest (also a
    │                                     DigestMismatchError, so it is retried)
    ├── StorageUnavailableError           5xx, throttling (also a ServerError: retried)
    ├── StorageNetworkError               connection refused/reset, timeout (also a
    │                                     RegistryNetworkError: retried)
    └── StorageAccessError                missing or refused credentials (also a DeniedError:
                                          never retried)

The second bases make :func:`d8mirror.errors.is_retryable` decide correctly without a second
retry policy. Messages never carry credentials.
"""

from __future__ import annotations

from d8mirror.errors import (
    DeniedError,
    DigestMismatchError,
    MirrorError,
    RegistryNetworkError,
    ServerError,
)


class TransferError(MirrorError):
    """An upload into, or a download from, object storage or an OCI artifact failed."""


class IncompleteUploadError(TransferError):
    """The remote bundle has no transfer manifest, or a file it lists is missing."""


class TransferIntegrityError(TransferError, DigestMismatchError):
    """Bytes (remote object or downloaded file) do not match the transfer manifest."""


class StorageUnavailableError(TransferError, ServerError):
    """The object store answered 5xx or asked us to slow down."""


class StorageNetworkError(TransferError, RegistryNetworkError):
    """The object store could not be reached or the connection broke."""


class StorageAccessError(TransferError, DeniedError):
    """Credentials are missing, wrong, or lack permission on the bucket."""
