"""Bundles in S3-compatible object storage: verified upload, resumable verified download.

One file per call, plus the transfer manifest; the flows of ``flows/transfer.py`` fan out
over the files. Upload, per file: HEAD the object; an object with the same size and the same
SHA-256 in its metadata (``x-amz-meta-sha256``) is skipped. Otherwise boto3's managed
transfer sends it (multipart above ``part_size``, ``concurrency`` parts at once, read from disk
by range, so memory stays bounded), and a HEAD afterwards checks size and metadata. The
transfer manifest goes last and is read back byte for byte: it is the commit record.

Download: the manifest first (none: the upload did not finish, refuse); every listed object is
HEADed before any byte is fetched (a missing one: refuse). Each file streams into
``<name>.partial``; a partial left by an interrupted run is re-hashed and continued with a
``Range`` request. The SHA-256 must equal the manifest's, else the partial is deleted; only
then is it renamed to its final name. The manifest is written locally last.

Credentials come from the standard AWS chain (environment, profile, instance role) or from an
:class:`S3Credentials` built by the caller; they never appear in errors or ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bx
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from d8mirror.errors import ConfigError, wrap_os_error
from d8mirror.files import PartialFile, partial_path, write_atomic
from d8mirror.hashing import sha256_bytes_hex

from .errors import (
    IncompleteUploadError,
    StorageAccessError,
    StorageNetworkError,
    StorageUnavailableError,
    TransferError,
    TransferIntegrityError,
)
from .manifest import (
    MANIFEST_NAME,
    FileEntry,
    TransferManifest,
    is_present,
)
from .results import FileResult
from .urls import S3Url

S3Client = Any  # botocore clients are generated at run time; there are no stubs to name
META_SHA256 = "sha256"
META_GOST = "gost"
PIECE = 1 << 20
MiB = 1 << 20
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "403",
        "401",
    }
)
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
    }
)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Settings:
    """How to reach the store and how hard to push it."""

    endpoint_url: str | None = None
    region: str | None = None
    verify_tls: bool | str = True  # False, or a CA bundle path
    part_size: int = 64 * MiB  # multipart chunk; 64 MiB gives 32 parts for 2 GiB
    concurrency: int = 4  # parts in flight per file

    def __post_init__(self) -> None:
        if self.part_size < 5 * MiB and self.endpoint_url is None:
            raise ConfigError(f"S3 part size {self.part_size} is below the 5 MiB minimum of S3")
        if self.concurrency < 1:
            raise ConfigError(f"S3 concurrency must be at least 1, got {self.concurrency}")

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.concurrency,
            use_threads=True,
        )


@dataclass(frozen=True)
class S3Credentials:
    """Explicit keys (otherwise the AWS chain is used). ``repr`` hides the secrets."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def make_client(settings: S3Settings, credentials: S3Credentials | None = None) -> S3Client:
    """A boto3 S3 client (path-style addressing for custom endpoints, standard retries)."""
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(10, settings.concurrency * 2),
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    keys: dict[str, str] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
        }
        if credentials.session_token:
            keys["aws_session_token"] = credentials.session_token
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        verify=settings.verify_tls,
        config=config,
        **keys,
    )


# -- errors --------------------------------------------------------------------------------------
def _client_error_code(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _translate(exc: BaseException, where: str) -> TransferError | None:
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        return _translate(exc.__context__, where)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return StorageAccessError(
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, or name a credentials block"
        )
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError)):
        return StorageNetworkError(
            f"S3 connection failed for {where}: {type(exc).__name__}; "
            "check --endpoint-url and the network",
            url=where,
        )
    if isinstance(exc, bx.ClientError):
        code, status = _client_error_code(exc)
        if code in _ACCESS_CODES or status in (401, 403):
            return StorageAccessError(
                f"S3 refused {where} ({code or status}): check the "
                "credentials and the bucket policy",
                url=where,
                status=status,
            )
        if code in _BUSY_CODES or status >= 500:
            return StorageUnavailableError(
                f"S3 is unavailable for {where} ({code or status}); retry later",
                url=where,
                status=status,
            )
        if code == "NoSuchBucket":
            return TransferError(f"bucket of {where} does not exist: create it or fix the URL")
        return TransferError(f"S3 error for {where}: {code or status}")
    return None


@contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """Turn botocore/boto3 exceptions into :mod:`d8mirror.transfer.errors`."""
    try:
        yield
    except (bx.BotoCoreError, bx.ClientError, S3UploadFailedError) as exc:
        translated = _translate(exc, where)
        if translated is None:
            raise
        raise translated from exc


# -- objects -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None


def head_object(client: S3Client, url: S3Url, name: str) -> ObjectInfo | None:
    """Size and recorded SHA-256 of an object; None when it does not exist."""
    key = url.key(name)
    try:
        with storage_errors(f"s3://{url.bucket}/{key}"):
            head = client.head_object(Bucket=url.bucket, Key=key)
    except TransferError as exc:
        code, status = _client_error_code(exc.__cause__ or exc)
        if code in _MISSING_CODES or status == 404:
            return None
        raise
    metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    return ObjectInfo(int(head["ContentLength"]), metadata.get(META_SHA256))


def child_prefixes(client: S3Client, url: S3Url) -> list[str]:
    """The names of the "subdirectories" right under ``url`` (``s3://b/p/<name>/…``), sorted."""
    base = f"{url.prefix}/" if url.prefix else ""
    names: set[str] = set()
    with storage_errors(str(url)):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=url.bucket, Prefix=base, Delimiter="/"
        )
        for page in pages:
            for common in page.get("CommonPrefixes") or []:
                name = str(common["Prefix"])[len(base) :].strip("/")
                if name:
                    names.add(name)
    return sorted(names)


def has_manifest(client: S3Client, url: S3Url) -> bool:
    """Whether ``url`` holds a transfer manifest: an upload that was committed."""
    return head_object(client, url, MANIFEST_NAME) is not None


def _matches(info: ObjectInfo | None, entry: FileEntry) -> bool:
    return info is not None and info.size == entry.size and info.sha256 == entry.sha256


def upload_file(
    client: S3Client,
    url: S3Url,
    path: Path,
    entry: FileEntry,
    settings: S3Settings,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Upload one file unless the same content is already there; verified by HEAD.
    ``on_progress(n)``: bytes sent, per read of boto3 (KiBs, from several threads: a
    :class:`~d8mirror.progress.Batched` is what to give)."""
    started = time.monotonic()
    where = f"{url}/{entry.name}"
    if _matches(head_object(client, url, entry.name), entry):
        return FileResult(entry.name, entry.size, "skipped", time.monotonic() - started)
    if path.stat().st_size != entry.size:
        raise TransferIntegrityError(
            f"{path} changed size since it was hashed; run the upload again",
            expected=str(entry.size),
            actual=str(path.stat().st_size),
        )
    metadata = {META_SHA256: entry.sha256}
    if entry.gost:
        metadata[META_GOST] = entry.gost
    with storage_errors(where):
        client.upload_file(
            str(path),
            url.bucket,
            url.key(entry.name),
            ExtraArgs={"Metadata": metadata},
            Config=settings.transfer_config(),
            Callback=on_progress,
        )
    info = head_object(client, url, entry.name)
    if not _matches(info, entry):
        raise TransferIntegrityError(
            f"{where} does not match {path} after upload (remote {info}); retry the upload",
            expected=entry.sha256,
            actual=str(info and info.sha256),
        )
    return FileResult(entry.name, entry.size, "uploaded", time.monotonic() - started)


def put_manifest(client: S3Client, url: S3Url, manifest: TransferManifest) -> None:
    """Write the transfer manifest (last) and read it back byte for byte."""
    data = manifest.to_bytes()
    key = url.key(MANIFEST_NAME)
    where = f"s3://{url.bucket}/{key}"
    with storage_errors(where):
        client.put_object(
            Bucket=url.bucket,
            Key=key,
            Body=data,
            ContentType="application/json",
            Metadata={META_SHA256: sha256_bytes_hex(data)},
        )
        echoed = client.get_object(Bucket=url.bucket, Key=key)["Body"].read()
    if echoed != data:
        raise TransferIntegrityError(
            f"{where} reads back different bytes; retry the upload",
            expected=sha256_bytes_hex(data),
            actual=sha256_bytes_hex(echoed),
        )


def read_manifest(client: S3Client, url: S3Url) -> TransferManifest:
    """The remote manifest; IncompleteUploadError when there is none."""
    key = url.key(MANIFEST_NAME)
    where = f"s3://{url.bucket}/{key}"
    try:
        with storage_errors(where):
            data = client.get_object(Bucket=url.bucket, Key=key)["Body"].read()
    except TransferError as exc:
        code, status = _client_error_code(exc.__cause__ or exc)
        if code in _MISSING_CODES or status == 404:
            raise IncompleteUploadError(
                f"no transfer manifest at {where}: the upload to {url} did not finish (or this "
                "is not a d8mirror bundle); run the upload again"
            ) from exc
        raise
    return TransferManifest.from_bytes(data, where)


def check_complete(client: S3Client, url: S3Url, manifest: TransferManifest) -> None:
    """HEAD every listed object; IncompleteUploadError naming the missing ones,
    TransferIntegrityError naming those whose size or recorded SHA-256 differ."""
    missing: list[str] = []
    wrong: list[str] = []
    for entry in manifest.files:
        info = head_object(client, url, entry.name)
        if info is None:
            missing.append(entry.name)
        elif not _matches(info, entry):
            wrong.append(entry.name)
    if missing:
        raise IncompleteUploadError(
            f"{url} is incomplete: {len(missing)} listed file(s) are "
            f"missing ({', '.join(missing[:5])}); run the upload again"
        )
    if wrong:
        raise TransferIntegrityError(
            f"{url}: object(s) {', '.join(wrong[:5])} do not match the "
            "transfer manifest (size or sha256); upload them again"
        )


# -- download ------------------------------------------------------------------------------------
def download_object(client: S3Client, url: S3Url, name: str, dest: Path, *, limit: int) -> None:
    """Fetch the small object ``url``/``name`` into ``dest`` (atomically), at most ``limit``
    bytes; TransferError naming the object when it is missing or larger (a receipt, its
    sidecar: checked by their reader, not here)."""
    where = f"s3://{url.bucket}/{url.key(name)}"
    try:
        with storage_errors(where):
            body = client.get_object(Bucket=url.bucket, Key=url.key(name))["Body"]
            data = body.read(limit + 1)
    except TransferError as exc:
        code, status = _client_error_code(exc.__cause__ or exc)
        if code in _MISSING_CODES or status == 404:
            raise TransferError(
                f"no object {where}: check the URL (and that it was uploaded)"
            ) from exc
        raise
    if len(data) > limit:
        raise TransferError(f"{where} is larger than {limit} bytes: not the file expected")
    try:
        write_atomic(dest, data)
    except OSError as exc:
        raise wrap_os_error(exc, str(dest)) from exc


def _fetch_range(
    client: S3Client,
    url: S3Url,
    entry: FileEntry,
    partial: PartialFile,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    offset = partial.length
    extra = {"Range": f"bytes={offset}-"} if offset else {}
    with storage_errors(f"{url}/{entry.name}"):
        body = client.get_object(Bucket=url.bucket, Key=url.key(entry.name), **extra)["Body"]
        for piece in body.iter_chunks(PIECE):
            if partial.length + len(piece) > entry.size:
                raise TransferIntegrityError(
                    f"{url}/{entry.name} is longer than the {entry.size} bytes in the manifest",
                    expected=str(entry.size),
                    actual=f">{entry.size}",
                )
            partial.append(piece)
            if on_progress is not None:
                on_progress(len(piece))


def download_file(
    client: S3Client,
    url: S3Url,
    entry: FileEntry,
    dest_dir: Path,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Fetch one object into ``dest_dir/<name>`` via ``.partial`` (resumed), verified;
    ``on_progress(n)`` per MiB received (a resumed partial's bytes first)."""
    started = time.monotonic()
    final = dest_dir / entry.name
    if is_present(final, entry):
        return FileResult(entry.name, entry.size, "present", time.monotonic() - started)
    where = partial_path(final)
    try:
        partial = PartialFile(where)
    except OSError as exc:
        raise wrap_os_error(exc, str(where)) from exc
    committed = False
    try:
        partial.fit(entry.size)
        resumed = partial.length > 0
        if on_progress is not None and partial.length:
            on_progress(partial.length)
        if partial.length < entry.size or entry.size == 0:
            _fetch_range(client, url, entry, partial, on_progress)
        if partial.length != entry.size or partial.hex != entry.sha256:
            partial.discard()
            raise TransferIntegrityError(
                f"{url}/{entry.name} does not match the transfer manifest (got {partial.length} "
                f"bytes, sha256 {partial.hex}); it was corrupted in storage or in transit, "
                "retry or upload it again",
                expected=entry.sha256,
                actual=partial.hex,
            )
        partial.commit(final)
        committed = True
    except OSError as exc:
        raise wrap_os_error(exc, str(where)) from exc
    finally:
        if not committed:
            partial.close_keeping_progress()
    return FileResult(
        entry.name, entry.size, "resumed" if resumed else "downloaded", time.monotonic() - started
    )
