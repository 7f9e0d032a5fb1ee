"""Transfer destinations: ``s3://bucket/prefix`` and ``oci://registry[:port]/repo:tag``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from d8mirror.errors import ConfigError, InvalidReferenceError
from d8mirror.reference import validate_repository, validate_tag

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Url:
    """A bucket and a key prefix (no leading or trailing ``/``; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class OciUrl:
    """A registry host, a repository and a tag."""

    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"oci://{self.registry}/{self.repository}:{self.tag}"


TransferUrl = S3Url | OciUrl


def sealed_file_location(url: S3Url, default_name: str) -> tuple[S3Url, str]:
    """Where a small sealed file (``receipt.json``) lives under an S3 URL: ``s3://b/p/x.json``
    names the object itself; any other URL is the prefix that holds ``default_name``."""
    head, _, last = url.prefix.rpartition("/")
    if last.endswith(".json"):
        return S3Url(url.bucket, head), last
    return url, default_name


def parse_s3_url(url: str) -> S3Url:
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"invalid S3 URL {url!r}: expected s3://BUCKET[/PREFIX] with a valid "
            "bucket name (3-63 lowercase letters, digits, dots, dashes)"
        )
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"invalid S3 URL {url!r}: the prefix has empty, '.' or '..' parts")
    return S3Url(bucket, prefix)


def parse_oci_url(url: str) -> OciUrl:
    rest = url.removeprefix("oci://")
    registry, _, path = rest.partition("/")
    repository, colon, tag = path.rpartition(":")
    if not registry or not path or not colon or "/" in tag:
        raise ConfigError(
            f"invalid OCI URL {url!r}: expected oci://REGISTRY/REPOSITORY:TAG, "
            "e.g. oci://registry.local:5000/d8/bundle:2024-06-01"
        )
    try:
        validate_repository(repository)
        validate_tag(tag)
    except InvalidReferenceError as exc:
        raise ConfigError(f"invalid OCI URL {url!r}: {exc}") from exc
    return OciUrl(registry, repository, tag)


def parse_transfer_url(url: str) -> TransferUrl:
    """An :class:`S3Url` or an :class:`OciUrl`; ConfigError naming the accepted forms."""
    if url.startswith("s3://"):
        return parse_s3_url(url)
    if url.startswith("oci://"):
        return parse_oci_url(url)
    raise ConfigError(
        f"unsupported transfer URL {url!r}: use s3://BUCKET[/PREFIX] or "
        "oci://REGISTRY/REPOSITORY:TAG"
    )


#: URL schemes of the transfer stores (anything else names a local path).
REMOTE_SCHEMES = ("s3://", "oci://")


def is_remote(url: str) -> bool:
    """Whether ``url`` names a transfer store rather than a local path."""
    return url.startswith(REMOTE_SCHEMES)
