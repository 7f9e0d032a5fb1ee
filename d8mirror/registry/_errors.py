"""Turn HTTP answers and transport failures into the typed errors of :mod:`d8mirror.errors`."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from d8mirror.errors import (
    BlobNotFoundError,
    DeniedError,
    ManifestNotFoundError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RegistryError,
    RegistryNetworkError,
    RepositoryNotFoundError,
    ServerError,
    TLSError,
    UnauthorizedError,
)

#: What a request was about, to pick the NotFoundError subclass for a 404 without a body.
Subject = Literal["manifest", "blob", "repository", "other"]

_MAX_ERROR_BODY = 64 * 1024
_AUTH_VALUE_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)\S+")
_SECRET_QUERY_HINTS = ("sig", "token", "credential", "password", "secret", "key", "auth")
_NOT_FOUND_BY_CODE: dict[str, type[NotFoundError]] = {
    "MANIFEST_UNKNOWN": ManifestNotFoundError,
    "BLOB_UNKNOWN": BlobNotFoundError,
    "NAME_UNKNOWN": RepositoryNotFoundError,
}
_NOT_FOUND_BY_SUBJECT: dict[Subject, type[NotFoundError]] = {
    "manifest": ManifestNotFoundError,
    "blob": BlobNotFoundError,
    "repository": RepositoryNotFoundError,
    "other": NotFoundError,
}


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without user info and with secret-looking query values hidden."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    query = [
        (key, "REDACTED" if any(hint in key.lower() for hint in _SECRET_QUERY_HINTS) else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def redact_auth(text: str) -> str:
    """``text`` with every ``Bearer …``/``Basic …`` value hidden (httpx echoes a header value
    it refuses, e.g. ``Illegal header value b'Bearer …'``)."""
    return _AUTH_VALUE_RE.sub(r"\1\2REDACTED", text)


def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body of ``response``, read as it streams and refused past ``limit`` bytes (the
    error names the redacted URL and the cap), never held beyond the cap."""
    url = redact_url(response.request.url)
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            f"{what} at {url} is {declared} bytes, over the {limit} limit",
            url=url,
            status=response.status_code,
        )
    if response.is_stream_consumed:
        body = response.content
    else:
        buffer = bytearray()
        for piece in response.iter_bytes():
            buffer += piece
            if len(buffer) > limit:
                break
        body = bytes(buffer)
    if len(body) > limit:
        raise ProtocolError(
            f"{what} at {url} is over the {limit} byte limit: refusing an endless answer",
            url=url,
            status=response.status_code,
        )
    return body


def raise_for_response(
    response: httpx.Response, *, subject: Subject, expected: tuple[int, ...], registry: str
) -> None:
    """Raise the typed error for ``response`` unless its status is one of ``expected``."""
    if response.status_code not in expected:
        raise error_from_response(response, subject=subject, registry=registry)


def error_from_response(
    response: httpx.Response, *, subject: Subject, registry: str
) -> RegistryError:
    """The typed error for an unexpected HTTP status (reads at most 64 KiB of the body)."""
    status = response.status_code
    url = redact_url(response.request.url)
    where = f"{response.request.method} {url}"
    code, detail = _error_code(_read_error_body(response))
    suffix = f" ({code}: {detail})" if code else ""
    if status == 404:
        cls = _NOT_FOUND_BY_CODE.get(code or "", _NOT_FOUND_BY_SUBJECT[subject])
        return cls(
            f"{_subject_name(cls)} not found: {where}{suffix}; check the repository "
            "path and the tag or digest",
            url=url,
            status=status,
            code=code,
        )
    if status == 401 and _insufficient_scope(response):
        return DeniedError(
            f"access denied by {registry}: {where} answered 401 insufficient_scope{suffix}; "
            "the credentials were accepted but lack permission for this repository or action",
            url=url,
            status=status,
            code=code,
        )
    if status == 401:
        return UnauthorizedError(
            f"authentication failed for {registry}: {where} answered 401{suffix}; check the "
            "credentials (login/password, license token or docker config)",
            url=url,
            status=status,
            code=code,
        )
    if status == 403:
        return DeniedError(
            f"access denied by {registry}: {where} answered 403{suffix}; the credentials lack "
            "permission for this repository or action",
            url=url,
            status=status,
            code=code,
        )
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitedError(
            f"rate limited by {registry}: {where} answered 429{suffix}; retry later",
            url=url,
            status=status,
            code=code,
            retry_after=retry_after,
        )
    if status >= 500:
        return ServerError(
            f"server error from {registry}: {where} answered {status}{suffix}; "
            "retry later or check the registry's health",
            url=url,
            status=status,
            code=code,
        )
    return ProtocolError(
        f"unexpected answer from {registry}: {where} answered {status}{suffix}",
        url=url,
        status=status,
        code=code,
    )


def _insufficient_scope(response: httpx.Response) -> bool:
    """A 401 whose Bearer challenge says ``error="insufficient_scope"`` (RFC 6750): the token
    was valid, its grant too small, so it is a denial, not a login failure (distribution
    answers so when a read-only user asks to push)."""
    challenge = response.headers.get("WWW-Authenticate", "")
    return 'error="insufficient_scope"' in challenge.replace(" ", "")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date (None when absent or bad)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@contextmanager
def translated_transport_errors(method: str, url: str | httpx.URL, registry: str) -> Iterator[None]:
    """Map httpx transport failures (and ssl errors) raised inside the block to typed errors."""
    try:
        yield
    except httpx.TooManyRedirects as exc:
        safe = redact_url(url)
        raise ProtocolError(f"too many redirects: {method} {safe}", url=safe) from exc
    except httpx.RequestError as exc:
        raise error_from_transport(exc, method, url, registry) from exc
    except ssl.SSLError as exc:
        raise _tls_error(exc, method, redact_url(url), registry) from exc


def error_from_transport(
    exc: BaseException, method: str, url: str | httpx.URL, registry: str
) -> RegistryError:
    safe = redact_url(_absolute_url(exc, url))
    ssl_exc = _find_ssl_error(exc)
    if ssl_exc is not None:
        return _tls_error(ssl_exc, method, safe, registry)
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return RegistryNetworkError(
        f"connection to {registry} {kind}: {method} {safe}: {type(exc).__name__}: "
        f"{redact_auth(str(exc))}; check "
        "that the registry is reachable, raise the timeout, or re-run (downloads resume)",
        url=safe,
    )


def _absolute_url(exc: BaseException, fallback: str | httpx.URL) -> str | httpx.URL:
    """The full URL of the failed request (httpx knows it; the caller may only have a path)."""
    if isinstance(exc, httpx.RequestError):
        try:
            return exc.request.url
        except RuntimeError:
            pass
    return fallback


def _tls_error(exc: ssl.SSLError, method: str, safe_url: str, registry: str) -> TLSError:
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        hint = (
            "trust the registry's CA with --ca-file (or SSL_CERT_FILE), or skip verification "
            "with --tls-skip-verify"
        )
        what = "TLS certificate verification failed"
    else:
        hint = (
            "if the registry serves plain HTTP use --insecure; otherwise check the CA "
            "(--ca-file / SSL_CERT_FILE) or use --tls-skip-verify"
        )
        what = "TLS handshake failed"
    return TLSError(f"{what} for {registry}: {method} {safe_url}: {exc}; {hint}", url=safe_url)


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "[SSL" in text:
        return ssl.SSLError(text)
    return None


def _read_error_body(response: httpx.Response) -> bytes:
    try:
        return response.content[:_MAX_ERROR_BODY]
    except httpx.ResponseNotRead:
        pass
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= _MAX_ERROR_BODY:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    return bytes(body[:_MAX_ERROR_BODY])


def _error_code(body: bytes) -> tuple[str | None, str]:
    """First ``errors[].code`` and its message from a distribution error body."""
    try:
        parsed = json.loads(body)
        first = parsed["errors"][0]
        return str(first["code"]), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError):
        return None, ""


def _subject_name(cls: type[NotFoundError]) -> str:
    return {
        ManifestNotFoundError: "manifest",
        BlobNotFoundError: "blob",
        RepositoryNotFoundError: "repository",
    }.get(cls, "resource")
