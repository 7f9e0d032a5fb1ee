"""OCI distribution client on httpx: auth, manifests, tags, streamed and resumable blobs.

Public surface (everything else in this package is private)::

    RegistryClient(registry, *, credentials, tls, timeout, limits, max_connections)
    Credentials, TLSOptions, Descriptor, Manifest, BlobReader
    TransferLimits (D8_MIRROR_TIMEOUT, the rate floor, the image deadline),
    check_transfer_environment()
    resolve_credentials(registry, *, username, password, license_token, docker_config)

Errors are those of :mod:`d8mirror.errors` (``RegistryError`` and its subclasses,
``DigestMismatchError``); callers retry by ``is_retryable``.
"""

from d8mirror.registry._blobio import BlobReader
from d8mirror.registry._client import RegistryClient
from d8mirror.registry._dockerconfig import resolve_credentials
from d8mirror.registry._limits import TransferLimits, check_transfer_environment
from d8mirror.registry._models import Credentials, Descriptor, Manifest, TLSOptions

__all__ = [
    "BlobReader",
    "Credentials",
    "Descriptor",
    "Manifest",
    "RegistryClient",
    "TLSOptions",
    "TransferLimits",
    "check_transfer_environment",
    "resolve_credentials",
]
