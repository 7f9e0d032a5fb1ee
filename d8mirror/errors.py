"""Typed errors of d8mirror. Callers catch by meaning, never by message text.

    MirrorError                      every error d8mirror raises on purpose
    ├── ConfigError                  bad flag, parameter or environment value
    │   ├── FilterError              bad --include-package / --exclude-package expression
    │   │   └── EmptyConstraintError "name@" with nothing after '@' (has .flag, .value)
    │   └── PathNotFoundError        a bundle, archive or file named by the user does not exist
    ├── InvalidReferenceError        bad image reference or repository name
    ├── InvalidImageMetadataError    bad JSON metadata read from inside an image (extra_images.json)
    ├── InvalidManifestError         a source manifest that cannot be pulled as it is (not retried)
    │   └── PlatformNotFoundError    an image index without a linux/amd64 image
    ├── RegistryError                a registry answered badly or not at all (has .url, .status)
    │   ├── NotFoundError            404: the thing does not exist (never retried)
    │   │   ├── ManifestNotFoundError   MANIFEST_UNKNOWN / tag or digest missing
    │   │   ├── BlobNotFoundError       BLOB_UNKNOWN
    │   │   └── RepositoryNotFoundError NAME_UNKNOWN
    │   ├── UnauthorizedError        401: credentials missing or wrong (never retried)
    │   ├── DeniedError              403: credentials lack permission (never retried)
    │   ├── RateLimitedError         429 (has .retry_after seconds or None)
    │   ├── ServerError              5xx
    │   ├── RegistryNetworkError     connection refused/reset, timeout, truncated body
    │   ├── TLSError                 certificate verification failed
    │   └── ProtocolError            an answer that breaks the distribution spec
    ├── ProbeCancelled               a --proxy-registry version probe was cancelled
    ├── IntegrityError
    │   ├── DigestMismatchError      bytes do not hash to their digest (retried: may be transient)
    │   │   └── LocalContentError    local bytes contradict their descriptor (never retried)
    │   └── LayerReadError           an image layer is truncated or not a readable tar
    │   └── SealedFileError          a receipt.json / delta.json that does not match its .sha256
    ├── LayoutError                  an OCI image layout is missing or malformed
    ├── ReceiptError                 a receipt or delta.json that is malformed or does not apply
    │   ├── DeltaBaseMissingError    a delta's omitted blobs are not in the target (nothing pushed)
    │   └── DeltaMountError          an omitted blob could not be mounted where a layout needs it
    ├── BundleError                  archives: packing, chunks, unpack
    │   ├── UnsafeArchiveEntryError  tar-slip, absolute path, link or device entry
    │   └── ChunkSetError            a chunk set is incomplete or malformed
    ├── CacheError                   a kept pull cache cannot be collected (bad run record)
    │   └── CacheBusyError           another pull or gc holds the cache's lock
    ├── DiskSpaceError               ENOSPC while writing (names the path)
    │   └── InsufficientSpaceError   a pull refused before fetching: it would not fit
    └── RunFailed                    a run ended with work not done whole (raised at its end,
        │                            after everything that could be done was done; names it,
        │                            .items: each failed part and its error)
        ├── PullFailed               packages failed (the others are in the bundle)
        ├── PushFailed               layouts failed or tags did not verify
        ├── TransferFailed           files were not uploaded / downloaded
        └── ChildRunFailed           a per-package child flow run did not complete

Messages say what failed, where, and what to do. They never contain credentials.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from d8mirror.units import human_size


class MirrorError(Exception):
    """Base of every error d8mirror raises on purpose."""


class ConfigError(MirrorError, ValueError):
    """A flag, parameter or environment value is invalid."""


class FilterError(ConfigError):
    """A package filter expression (NAME[@CONSTRAINT]) is invalid."""


class EmptyConstraintError(FilterError):
    """``name@`` with nothing after ``@`` -- often a shell that ate ``>=...`` as a redirect."""

    def __init__(self, flag: str, value: str) -> None:
        name = value.strip().partition("@")[0].strip() or "name"
        super().__init__(
            f"Version constraint is missing after '@' in {flag} \"{value}\"; "
            f'if your shell ate the rest, quote it: {flag} "{name}@>=1.43.2"'
        )
        self.flag = flag
        self.value = value


class PathNotFoundError(ConfigError):
    """A path the user named (bundle directory, archive, ``--file``) does not exist."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class InvalidReferenceError(MirrorError, ValueError):
    """An image reference or repository name is invalid."""


class InvalidImageMetadataError(MirrorError, ValueError):
    """A metadata file read from inside an image (e.g. ``extra_images.json``) is malformed."""


class InvalidManifestError(MirrorError):
    """A manifest from the source registry is malformed or hostile: not a JSON object, a bad
    descriptor (digest, size, type), a layer without a size, indexes nested too deeply.
    Deterministic: retrying fetches the same bytes, so it is never retried."""


class PlatformNotFoundError(InvalidManifestError):
    """An image index has no linux/amd64 image (the only platform mirrored, R-6.3)."""


class RegistryError(MirrorError):
    """A registry request failed. ``url`` never carries credentials."""

    def __init__(
        self, message: str, *, url: str = "", status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.code = code


class NotFoundError(RegistryError):
    """The registry says the object does not exist (HTTP 404)."""


class ManifestNotFoundError(NotFoundError):
    """Tag or manifest digest is unknown (MANIFEST_UNKNOWN)."""


class BlobNotFoundError(NotFoundError):
    """Blob is unknown (BLOB_UNKNOWN)."""


class RepositoryNotFoundError(NotFoundError):
    """Repository is unknown (NAME_UNKNOWN)."""


class UnauthorizedError(RegistryError):
    """HTTP 401: credentials are missing or wrong."""


class DeniedError(RegistryError):
    """HTTP 403: the credentials do not grant this action."""


class RateLimitedError(RegistryError):
    """HTTP 429. ``retry_after`` is the server's Retry-After in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status, code=code)
        self.retry_after = retry_after


class ServerError(RegistryError):
    """HTTP 5xx."""


class RegistryNetworkError(RegistryError):
    """The connection failed, timed out or was cut mid-body."""


class TLSError(RegistryError):
    """TLS certificate verification failed."""


class ProtocolError(RegistryError):
    """The registry's answer breaks the distribution spec (bad header, bad JSON...)."""


class ProbeCancelled(MirrorError):
    """A --proxy-registry version probe stopped because the run was cancelled."""


class IntegrityError(MirrorError):
    """Content does not match what it claims to be."""


class DigestMismatchError(IntegrityError):
    """Bytes do not hash to the expected digest."""

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LocalContentError(DigestMismatchError):
    """Bytes on this machine contradict their descriptor (a blob in an archive or file shorter
    than its manifest says): deterministic, so never retried."""


class LayerReadError(IntegrityError):
    """An image layer on disk is truncated or not a readable (gzip) tar."""


class SealedFileError(IntegrityError):
    """A small JSON file carried with a ``.sha256`` sidecar (``receipt.json``, ``delta.json``)
    is missing its sidecar or does not hash to it: tampered or truncated; never used."""


class ReceiptError(MirrorError):
    """A receipt or a delta description is malformed, or does not apply to what it is used for."""


class DeltaBaseMissingError(ReceiptError):
    """A delta bundle's omitted blobs are not in (nor mountable within) the target registry:
    the target is not at the receipt the delta was built against; nothing was pushed."""


class DeltaMountError(ReceiptError):
    """A blob a delta bundle omits is not in the repository that needs it and could not be
    mounted there (the registry refused the cross-repository mount, or no repository of the
    target is known to hold it); the layout fails, the others go on."""


class LayoutError(MirrorError):
    """An OCI image layout is missing or malformed."""


class BundleError(MirrorError):
    """A bundle archive could not be written or read."""


class UnsafeArchiveEntryError(BundleError):
    """A tar entry would escape its target directory or is not a regular file."""


class ChunkSetError(BundleError):
    """A chunked archive is incomplete or malformed."""


class CacheError(MirrorError):
    """A kept pull cache (``--tmp-dir``) cannot be garbage-collected as it is."""


class CacheBusyError(CacheError):
    """Another pull (shared lock) or gc (exclusive lock) is using the cache right now."""


class DiskSpaceError(MirrorError, OSError):
    """The disk is full while writing ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__(
            errno.ENOSPC,
            f"disk space exhausted while writing {path}: free space there, "
            "use --tmp-dir on a bigger volume, or split archives with --images-bundle-chunk-size",
        )
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


class InsufficientSpaceError(DiskSpaceError):
    """A pull that would not fit, refused before it fetches a blob or writes an archive.

    ``needs`` holds one ``(role, path, bytes needed, bytes free)`` per filesystem the pull
    writes to (``role``: "tmp dir", "bundle dir", or both when they are one filesystem), the
    margin included; ``margin`` says how it was sized (see :mod:`d8mirror.pull.sizing`).
    """

    def __init__(self, needs: list[tuple[str, str, int, int]], margin: str) -> None:
        parts = [
            f"{role} {path} needs {human_size(needed)} ({needed} bytes), has "
            f"{human_size(free)} ({free} bytes) free{' (too small)' if needed > free else ''}"
            for role, path, needed, free in needs
        ]
        message = (
            f"not enough disk space for this pull: {'; '.join(parts)} (a margin of {margin} "
            "included); nothing was fetched or written. Free space there, put the working "
            "dir on a bigger volume with --tmp-dir, split archives with "
            "--images-bundle-chunk-size, pull fewer packages (--include-package), or skip "
            "this check with --skip-space-check"
        )
        OSError.__init__(self, errno.ENOSPC, message)
        short = [path for _, path, needed, free in needs if needed > free]
        self.path = short[0] if short else ""
        self.needs = needs


class RunFailed(MirrorError):
    """A run ended with work not done whole; raised at its end, naming what failed.
    ``items``: (package, layout or file; its error) of each failed part, for the CLI's error
    block (kept through pickling: it is an attribute, the message the only argument)."""

    def __init__(self, message: str, *, items: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.items: tuple[tuple[str, str], ...] = tuple(items)


class PullFailed(RunFailed):
    """A pull in which packages failed (or the run itself could not finish)."""


class PushFailed(RunFailed):
    """A push in which layouts failed or tags did not verify."""


class TransferFailed(RunFailed):
    """An upload or download in which files failed."""


class ImportFailed(RunFailed):
    """An import in which a bundle could not be downloaded or pushed (the later ones wait)."""


class ChildRunFailed(RunFailed):
    """A per-package child flow run ended in a non-completed state."""


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed.

    Transient: rate limits, 5xx, network faults, digest mismatches (a corrupted transfer).
    Never retried: not found, unauthorized, denied, bad input, TLS failures, protocol errors,
    local content that contradicts its descriptor (the same bytes would be read again).
    """
    if isinstance(
        exc,
        (NotFoundError, UnauthorizedError, DeniedError, TLSError, ConfigError, LocalContentError),
    ):
        return False
    return isinstance(
        exc, (RateLimitedError, ServerError, RegistryNetworkError, DigestMismatchError)
    )


def add_context(exc: BaseException, context: str) -> None:
    """Append ``context`` to the message of an error built from one message string (the type,
    and so how callers catch and retry it, stays the same)."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} {context}",)


def wrap_os_error(exc: OSError, path: str) -> OSError:
    """Turn ENOSPC into :class:`DiskSpaceError` naming ``path``; other errors unchanged."""
    if exc.errno == errno.ENOSPC and not isinstance(exc, DiskSpaceError):
        return DiskSpaceError(path)
    return exc
