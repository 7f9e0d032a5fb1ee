"""The OCI distribution client: one per registry host, safe to share between threads."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from d8mirror.errors import (
    ConfigError,
    DigestMismatchError,
    ProtocolError,
    RegistryError,
    RegistryNetworkError,
    ServerError,
    wrap_os_error,
)
from d8mirror.files import PartialFile, partial_path
from d8mirror.hashing import sha256_bytes_digest
from d8mirror.mediatypes import MANIFEST_ACCEPT, MAX_MANIFEST_BYTES
from d8mirror.reference import (
    is_valid_digest,
    validate_digest,
    validate_repository,
    validate_tag,
)
from d8mirror.registry._auth import RegistryAuth
from d8mirror.registry._blobio import (
    CHUNK_SIZE,
    BlobReader,
    file_chunks,
    source_range,
)
from d8mirror.registry._errors import (
    Subject,
    error_from_response,
    raise_for_response,
    read_capped,
    redact_url,
    translated_transport_errors,
)
from d8mirror.registry._limits import DEADLINE_EXTENSION, TransferLimits, WatchedTransport
from d8mirror.registry._links import parse_next_link
from d8mirror.registry._models import Credentials, Descriptor, Manifest, TLSOptions

_ACCEPT = {"Accept": ", ".join(MANIFEST_ACCEPT)}
_IDENTITY = {"Accept-Encoding": "identity"}
_OCTETS = "application/octet-stream"
_USER_AGENT = {"User-Agent": "d8mirror/0.1"}
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

_MAX_LIST_BODY = 16 << 20
#: Bodies nobody reads (a PUT's or POST's answer) are drained up to this, then dropped.
_MAX_IGNORED_BODY = 64 << 10
#: Answers that prove an HTTP registry when ``--insecure`` falls back from HTTPS.
_REGISTRY_PING = (200, 401)
#: A TLS handshake takes milliseconds: a plain-HTTP server that sits on one is not waited for.
_HTTPS_PROBE_TIMEOUT = 10.0
log = logging.getLogger("d8mirror.registry")
#: Signed schema1 manifests announce the digest of their unsigned payload, not of the body.
_SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1"
_DEFAULT_TLS = TLSOptions()


def _body_pieces(response: httpx.Response) -> Iterator[bytes]:
    """The body as it arrives off the socket: no decoding (we asked for identity) and no
    re-chunking (joining pieces into 1 MiB ones copies every byte once more). A server that
    encodes anyway gets decoded; the digest check covers what the decoder yields."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity") and not response.is_stream_consumed:
        return response.iter_raw()
    return response.iter_bytes(CHUNK_SIZE)


def ssl_context(tls: TLSOptions) -> ssl.SSLContext:
    """System trust (honours SSL_CERT_FILE/SSL_CERT_DIR) plus ``ca_file``, or no verification."""
    if tls.skip_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA file {tls.ca_file}: {exc}; give a PEM "
                "bundle of the registry's CA certificates"
            ) from exc
    return context


class RegistryClient:
    """Talks the OCI distribution API to one registry (``host[:port]``).

    No retries here apart from one Range-resume of a broken blob download and one
    re-authentication on 401: callers retry by :func:`d8mirror.errors.is_retryable`.

    HTTPS always, unless ``tls.insecure``: then HTTPS is tried first and plain HTTP is used
    when the HTTPS attempt fails and the host answers ``/v2/`` over HTTP (as d8 does through
    go-containerregistry's insecure registries). ``limits`` (default: from the environment,
    :meth:`TransferLimits.from_env`) bound each request: ``D8_MIRROR_TIMEOUT`` and the
    transfer-rate floor; ``timeout``, when given, is the socket timeout instead of the stall
    window. ``transport``, when given, carries every request (registry and token endpoint)
    instead of an :class:`httpx.HTTPTransport` built from ``tls`` and ``max_connections``
    (tests pass an :class:`httpx.MockTransport`); the limits watch still wraps it, and
    :meth:`close` closes it.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        tls: TLSOptions = _DEFAULT_TLS,
        timeout: float | None = None,
        limits: TransferLimits | None = None,
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not registry or "/" in registry or "@" in registry:
            raise ConfigError(f"invalid registry host {registry!r}: expected host[:port]")
        self.registry = registry
        self.limits = limits if limits is not None else TransferLimits.from_env()
        socket_timeout = self.limits.socket_timeout if timeout is None else timeout
        base_url = httpx.URL(f"https://{registry}")
        self._scheme_known = not tls.insecure
        self._scheme_lock = threading.Lock()
        verify = ssl_context(tls)
        self._verify = verify
        pool = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        token_transport = transport or httpx.HTTPTransport(verify=verify)
        self._token_http = httpx.Client(
            transport=WatchedTransport(token_transport, self.limits),
            timeout=socket_timeout,
            follow_redirects=True,
            headers=_USER_AGENT,
        )
        self._auth = RegistryAuth(registry, credentials, self._token_http, origin=base_url)
        self._http = httpx.Client(
            base_url=base_url,
            auth=self._auth,
            transport=WatchedTransport(
                transport or httpx.HTTPTransport(verify=verify, limits=pool), self.limits
            ),
            timeout=socket_timeout,
            follow_redirects=True,
            headers=_USER_AGENT,
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    def close(self) -> None:
        self._http.close()
        self._token_http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``https`` or ``http`` (after the ``--insecure`` fallback)."""
        self._resolve_scheme()
        return self._http.base_url.scheme

    def _resolve_scheme(self) -> None:
        """With ``--insecure``: HTTPS if the host speaks it, else plain HTTP; decided once,
        by the first request that gets an answer either way."""
        if self._scheme_known:
            return
        with self._scheme_lock:
            if self._scheme_known:
                return
            if not self._speaks_https():
                plain = httpx.URL(f"http://{self.registry}")
                self._http.base_url = plain
                self._auth.set_origin(plain)
                log.info("%s does not speak HTTPS: using plain HTTP (--insecure)", self.registry)
            self._scheme_known = True

    def _speaks_https(self) -> bool:
        """HTTPS and plain HTTP ``GET /v2/`` are sent together, HTTPS first: any answer over
        HTTPS settles it; a registry's answer (200/401) over plain HTTP proves the port speaks
        no TLS, so nobody waits for a plain server to give up on a TLS handshake."""
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scheme-probe")
        try:
            https = pool.submit(self._probe, "https")
            http = pool.submit(self._probe, "http")
            pending = {https, http}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                if https in done and https.exception() is None:
                    return True
                if http in done and http.exception() is None and http.result() in _REGISTRY_PING:
                    return False
        finally:
            pool.shutdown(wait=False)
        status = None if http.exception() is not None else http.result()
        if status is not None and (status == 429 or status >= 500):
            raise ServerError(
                f"{self.registry} answered {status} to GET /v2/ over plain HTTP "
                "and nothing over HTTPS; retry later",
                url=f"http://{self.registry}/v2/",
                status=status,
            )
        secure = f"https://{self.registry}/v2/"
        with translated_transport_errors("GET", secure, self.registry):
            raise https.exception() or ProtocolError(f"no answer from {secure}")

    def _probe(self, scheme: str) -> int:
        """One ``GET /v2/`` over ``scheme`` on a connection of its own: the probe that loses
        the race may still be in its TLS handshake after the answer is settled, or after this
        client is closed, so it shares no pool that another thread could close under it (a
        socket closed mid-handshake frees its descriptor number for reuse elsewhere)."""
        timeout = self.limits.socket_timeout
        if scheme == "https":
            timeout = min(_HTTPS_PROBE_TIMEOUT, timeout)
        with (
            httpx.Client(
                transport=httpx.HTTPTransport(verify=self._verify),
                timeout=timeout,
                headers=_USER_AGENT,
            ) as probe,
            probe.stream(
                "GET", f"{scheme}://{self.registry}/v2/", follow_redirects=False
            ) as response,
        ):
            return response.status_code

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        subject: Subject,
        expected: tuple[int, ...],
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
    ) -> httpx.Response:
        """One request whose body, if any, nobody reads: drained up to a cap, then closed."""
        self._resolve_scheme()
        with translated_transport_errors(method, url, self.registry):
            response = self._http.send(
                self._http.build_request(method, url, headers=headers, content=content), stream=True
            )
        try:
            raise_for_response(response, subject=subject, expected=expected, registry=self.registry)
            with translated_transport_errors(method, url, self.registry):
                _drain(response, _MAX_IGNORED_BODY)
        finally:
            response.close()
        return response

    @contextmanager
    def _stream(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        subject: Subject,
        expected: tuple[int, ...],
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> Iterator[httpx.Response]:
        self._resolve_scheme()
        extensions = {DEADLINE_EXTENSION: deadline} if deadline is not None else None
        with (
            translated_transport_errors(method, url, self.registry),
            self._http.stream(method, url, headers=headers, extensions=extensions) as response,
        ):
            raise_for_response(response, subject=subject, expected=expected, registry=self.registry)
            yield response

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            url = redact_url(response.request.url)
            raise ProtocolError(
                f"{response.request.method} {url} answered "
                f"{response.status_code} without a Location header",
                url=url,
                status=response.status_code,
            )
        return response.url.join(location)

    # -- registry and tags ------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ with authentication: proves reachability, TLS and credentials."""
        self._send("GET", "/v2/", subject="other", expected=(200,))

    def list_tags(self, repository: str, *, limit: int = 100_000) -> list[str]:
        """All tags of ``repository`` (following ``Link`` pagination), sorted and unique."""
        validate_repository(repository)
        return sorted(set(self._paginate(f"/v2/{repository}/tags/list", "tags", limit)))

    def list_repositories(self, *, page_size: int = 1000, limit: int = 100_000) -> list[str]:
        """The registry catalog (``/v2/_catalog?n=page_size``), sorted and unique."""
        url = httpx.URL("/v2/_catalog", params={"n": str(page_size)})
        return sorted(set(self._paginate(url, "repositories", limit)))

    def _paginate(self, url: str | httpx.URL, key: str, limit: int) -> list[str]:
        items: list[str] = []
        seen: set[str] = set()
        next_url: str | httpx.URL | None = url
        while next_url is not None:
            with self._stream("GET", next_url, subject="repository", expected=(200,)) as response:
                items.extend(_string_list(response, key))
            if len(items) > limit:
                raise ProtocolError(
                    f"{redact_url(response.request.url)} lists more than "
                    f"{limit} {key}: refusing an endless list",
                    url=redact_url(response.request.url),
                    status=200,
                )
            target = parse_next_link(response.headers.get("Link"))
            next_url = response.url.join(target) if target else None
            if next_url is not None:
                if str(next_url) in seen:
                    raise ProtocolError(
                        f"pagination loops at {redact_url(next_url)}",
                        url=redact_url(next_url),
                        status=200,
                    )
                seen.add(str(next_url))
        return items

    # -- manifests --------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> Descriptor:
        """Media type, digest and size of a manifest; falls back to GET when HEAD is unhelpful."""
        url = _manifest_path(repository, reference)
        self._resolve_scheme()
        with translated_transport_errors("HEAD", url, self.registry):
            response = self._http.head(url, headers=_ACCEPT)
        if response.status_code == 404:
            raise error_from_response(response, subject="manifest", registry=self.registry)
        if response.status_code == 200:
            descriptor = _descriptor_from_headers(response)
            if descriptor is not None and (
                not is_valid_digest(reference) or descriptor.digest == reference
            ):
                return descriptor
        return self.get_manifest(repository, reference).descriptor

    def get_manifest(
        self, repository: str, reference: str, *, deadline: float | None = None
    ) -> Manifest:
        """The manifest bytes exactly as served (all four manifest types accepted).
        ``deadline``: a ``limits.clock`` time past which the request is aborted."""
        url = _manifest_path(repository, reference)
        with self._stream(
            "GET", url, subject="manifest", expected=(200,), headers=_ACCEPT, deadline=deadline
        ) as response:
            data = read_capped(response, MAX_MANIFEST_BYTES, "manifest")
            content_type = response.headers.get("Content-Type", "")
            served = response.headers.get("Docker-Content-Digest", "")
        digest = sha256_bytes_digest(data)
        if is_valid_digest(reference) and digest != reference:
            raise DigestMismatchError(
                f"manifest {repository}@{reference} from {self.registry} hashes to {digest}: "
                "the registry served other bytes; retry, or repair the source",
                expected=reference,
                actual=digest,
            )
        if (
            is_valid_digest(served)
            and served != digest
            and not content_type.lower().startswith(_SCHEMA1_PREFIX)
        ):
            # By tag there is nothing else to check against: a body cut short by a wrong
            # Content-Length, or corrupted on the way, would silently resolve the tag to
            # another digest.
            raise DigestMismatchError(
                f"manifest {repository}:{reference} from {self.registry} hashes to {digest}, "
                f"but the registry announced {served}: the body was truncated or corrupted on "
                "the way; retry",
                expected=served,
                actual=digest,
            )
        return Manifest(_manifest_media_type(content_type, data), digest, data)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Upload manifest ``data`` unchanged under a tag or digest; returns its digest."""
        url = _manifest_path(repository, reference)
        digest = sha256_bytes_digest(data)
        if is_valid_digest(reference) and digest != reference:
            raise DigestMismatchError(
                f"manifest bytes hash to {digest}, not {reference}",
                expected=reference,
                actual=digest,
            )
        response = self._send(
            "PUT",
            url,
            subject="manifest",
            expected=(200, 201, 202),
            headers={"Content-Type": media_type},
            content=data,
        )
        _check_digest_header(response, digest)
        return digest

    # -- blobs ------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        url = _blob_path(repository, digest)
        response = self._send("HEAD", url, subject="blob", expected=(200, 404))
        return response.status_code == 200

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        deadline: float | None = None,
    ) -> int:
        """Stream a blob to ``dest`` via ``dest.partial``, verified; returns its size.

        A ``.partial`` left by an earlier attempt is re-hashed and continued with a Range
        request; a connection broken mid-body is resumed the same way once. ``on_progress``
        gets byte counts as they land (the reused partial counts once, first).
        """
        url = _blob_path(repository, digest)
        where = partial_path(dest)
        try:
            partial = PartialFile(where)
        except OSError as exc:
            raise wrap_os_error(exc, str(where)) from exc
        committed = False
        try:
            partial.fit(size)
            if on_progress is not None and partial.length:
                on_progress(partial.length)
            self._download_resuming(url, partial, size, on_progress, deadline)
            _verify_partial(partial, digest, size, f"{repository}@{digest}")
            partial.commit(dest)
            committed = True
            return partial.length
        except DigestMismatchError:
            partial.discard()
            raise
        except OSError as exc:
            raise wrap_os_error(exc, str(where)) from exc
        finally:
            if not committed:
                partial.close_keeping_progress()

    def _download_resuming(
        self,
        url: str,
        partial: PartialFile,
        size: int | None,
        on_progress: Callable[[int], None] | None,
        deadline: float | None,
    ) -> None:
        try:
            self._download_into(url, partial, size, on_progress, deadline)
        except RegistryNetworkError:
            self._download_into(url, partial, size, on_progress, deadline)

    def _download_into(
        self,
        url: str,
        partial: PartialFile,
        size: int | None,
        on_progress: Callable[[int], None] | None,
        deadline: float | None,
    ) -> None:
        for _attempt in range(2):
            offset = partial.length
            if size is not None and offset == size:
                return
            headers = dict(_IDENTITY)
            if offset:
                headers["Range"] = f"bytes={offset}-"
            with self._stream(
                "GET",
                url,
                subject="blob",
                expected=(200, 206, 416),
                headers=headers,
                deadline=deadline,
            ) as response:
                if response.status_code == 416:
                    partial.restart()
                    continue
                if response.status_code == 200 and offset:
                    partial.restart()
                elif response.status_code == 206:
                    _check_content_range(response, offset)
                for piece in _body_pieces(response):
                    partial.append(piece)
                    if size is not None and partial.length > size:
                        raise DigestMismatchError(
                            f"blob {url} on {self.registry} is longer than its {size} bytes",
                            expected=str(size),
                            actual=f">{size}",
                        )
                    if on_progress is not None:
                        on_progress(len(piece))
                return
        raise ProtocolError(
            f"{url} keeps answering 416 to a download from byte 0", url=url, status=416
        )

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[BlobReader]:
        """A readable stream of a blob, hashed as it is read (DigestMismatchError at EOF)."""
        url = _blob_path(repository, digest)
        with self._stream(
            "GET", url, subject="blob", expected=(200,), headers=_IDENTITY
        ) as response:
            yield BlobReader(_body_pieces(response), digest, f"{repository}@{digest}")

    def upload_blob(
        self,
        repository: str,
        digest: str,
        source: Path,
        *,
        size: int | None = None,
        offset: int | None = None,
        chunk_size: int = 64 << 20,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload ``source`` as blob ``digest``: POST + PUT, or POST + PATCH… + PUT (chunked).

        The blob is the whole file (``size``, when given, must be its length), or with
        ``offset`` the ``size`` bytes of ``source`` from ``offset`` (an entry of a plain tar)."""
        validate_digest(digest)
        validate_repository(repository)
        if chunk_size <= 0:
            raise ConfigError(f"upload chunk size must be positive, got {chunk_size}")
        first, length = source_range(source, digest, size=size, offset=offset)
        start = self._send(
            "POST", f"/v2/{repository}/blobs/uploads/", subject="repository", expected=(202,)
        )
        location = self._location(start)
        done = 0
        if length > chunk_size:
            while done < length:
                piece = min(chunk_size, length - done)
                location = self._patch_chunk(location, source, first + done, done, piece)
                done += piece
                if on_progress is not None:
                    on_progress(piece)
        final_length = length - done
        finish = self._send(
            "PUT",
            location.copy_merge_params({"digest": digest}),
            subject="blob",
            expected=(201, 204),
            headers={"Content-Type": _OCTETS, "Content-Length": str(final_length)},
            content=file_chunks(source, first + done, final_length),
        )
        if on_progress is not None and final_length:
            on_progress(final_length)
        _check_digest_header(finish, digest)

    def _patch_chunk(
        self, location: httpx.URL, source: Path, start: int, offset: int, length: int
    ) -> httpx.URL:
        """PATCH ``length`` bytes of ``source`` from file position ``start`` as the bytes
        ``offset``… of the blob being uploaded."""
        response = self._send(
            "PATCH",
            location,
            subject="blob",
            expected=(202,),
            headers={
                "Content-Type": _OCTETS,
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{offset + length - 1}",
            },
            content=file_chunks(source, start, length),
        )
        return self._location(response)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; False (upload session cancelled) when the registry declines."""
        validate_digest(digest)
        validate_repository(repository)
        validate_repository(from_repository)
        url = httpx.URL(
            f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": from_repository}
        )
        response = self._send("POST", url, subject="blob", expected=(201, 202))
        if response.status_code == 201:
            return True
        self._cancel_upload(response)
        return False

    def probe_push(self, repository: str) -> None:
        """Prove push permission on ``repository`` without writing anything: open a blob upload
        session (needs push) and cancel it at once (an uncancelled session expires anyway)."""
        validate_repository(repository)
        response = self._send(
            "POST", f"/v2/{repository}/blobs/uploads/", subject="repository", expected=(202,)
        )
        self._cancel_upload(response)

    def _cancel_upload(self, response: httpx.Response) -> None:
        # An abandoned session expires on its own; the mount answer stands either way.
        with suppress(RegistryError):
            self._send(
                "DELETE", self._location(response), subject="other", expected=(200, 202, 204, 404)
            )


def _manifest_path(repository: str, reference: str) -> str:
    validate_repository(repository)
    if not is_valid_digest(reference):
        validate_tag(reference)
    return f"/v2/{repository}/manifests/{reference}"


def _blob_path(repository: str, digest: str) -> str:
    validate_repository(repository)
    validate_digest(digest)
    return f"/v2/{repository}/blobs/{digest}"


def _string_list(response: httpx.Response, key: str) -> list[str]:
    url = redact_url(response.request.url)
    try:
        body: Any = json.loads(read_capped(response, _MAX_LIST_BODY, key))
    except ValueError as exc:
        # A list carries no digest: a body cut short under a matching Content-Length (a proxy
        # dropping the connection's tail) is the likely cause, so it is retried like a cut body.
        raise RegistryNetworkError(
            f"{url} answered a list that is not valid JSON (cut short on the way?): {exc}",
            url=url,
            status=200,
        ) from exc
    items = body.get(key) if isinstance(body, dict) else None
    if items is None and isinstance(body, dict):
        return []  # some registries send "tags": null for an empty repository
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ProtocolError(f"{url} answered no list of strings under {key!r}", url=url, status=200)
    return items


def _drain(response: httpx.Response, limit: int) -> None:
    """Read and drop up to ``limit`` bytes of an unwanted body (so the connection can be
    reused); a longer one is left unread and the connection closed with the response."""
    total = 0
    for piece in response.iter_raw():
        total += len(piece)
        if total > limit:
            return


def _manifest_media_type(content_type: str, data: bytes) -> str:
    declared = content_type.split(";", 1)[0].strip().lower()
    if declared not in _GENERIC_TYPES:
        return declared
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    embedded = parsed.get("mediaType") if isinstance(parsed, dict) else None
    if isinstance(embedded, str) and embedded:
        return embedded
    raise ProtocolError(
        f"manifest has no media type (Content-Type {content_type!r} and no mediaType field)"
    )


def _descriptor_from_headers(response: httpx.Response) -> Descriptor | None:
    digest = response.headers.get("Docker-Content-Digest", "")
    length = response.headers.get("Content-Length", "")
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if not is_valid_digest(digest) or not length.isdigit() or media_type in _GENERIC_TYPES:
        return None
    return Descriptor(media_type, digest, int(length))


def _check_digest_header(response: httpx.Response, digest: str) -> None:
    served = response.headers.get("Docker-Content-Digest")
    if served and served != digest:
        url = redact_url(response.request.url)
        raise ProtocolError(
            f"{url} stored digest {served}, but the bytes sent hash to {digest}",
            url=url,
            status=response.status_code,
        )


def _check_content_range(response: httpx.Response, offset: int) -> None:
    content_range = response.headers.get("Content-Range", "")
    if not content_range.startswith(f"bytes {offset}-"):
        url = redact_url(response.request.url)
        raise ProtocolError(
            f"{url} answered a Range from byte {offset} with Content-Range {content_range!r}",
            url=url,
            status=206,
        )


def _verify_partial(partial: PartialFile, digest: str, size: int | None, where: str) -> None:
    if size is not None and partial.length != size:
        raise DigestMismatchError(
            f"blob {where} has {partial.length} bytes, not {size}: truncated or wrong; retry",
            expected=str(size),
            actual=str(partial.length),
        )
    if partial.digest != digest:
        raise DigestMismatchError(
            f"blob {where} hashes to {partial.digest}: the registry served corrupted data; "
            "retry, or repair the blob in the source registry",
            expected=digest,
            actual=partial.digest,
        )
