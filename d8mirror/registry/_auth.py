"""Registry authentication as an :class:`httpx.Auth`: anonymous, Basic and Bearer tokens.

Flow per request: send the cached Basic header or Bearer token for the request's predicted
scopes; on a 401 parse ``WWW-Authenticate`` and answer the challenge (Basic: send the
credentials from now on; Bearer: fetch a token for the challenged scopes from the realm) and
re-send once; a second 401 with a different scope set gets one more token fetch.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import httpx

from d8mirror.errors import ProtocolError, UnauthorizedError
from d8mirror.registry._errors import (
    error_from_response,
    read_capped,
    redact_url,
    translated_transport_errors,
)
from d8mirror.registry._models import Credentials

_PARAM_RE = re.compile(r'([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_UPLOADS_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/.*$")
_OBJECT_RE = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|referrers)/[^/]+$")
_TAGS_RE = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_READ_METHODS = frozenset({"GET", "HEAD"})
_DEFAULT_TOKEN_LIFETIME = 60.0
_EXPIRY_MARGIN = 10.0
_MAX_TOKEN_BODY = 1 << 20
#: A token goes into an HTTP header: visible ASCII only (RFC 6750's b64token and then some).
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")
log = logging.getLogger("d8mirror.registry")


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="a b"``; quoted values keep commas/spaces."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    for key, raw in _PARAM_RE.findall(rest):
        value = raw[1:-1] if raw.startswith('"') else raw
        params[key.lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme.lower(), params)


def predicted_scopes(request: httpx.Request) -> tuple[str, ...]:
    """The token scopes a distribution registry will ask for this request."""
    path = request.url.path
    if path == "/v2/_catalog":
        return ("registry:catalog:*",)
    actions = "pull" if request.method in _READ_METHODS else "pull,push"
    for pattern in (_UPLOADS_RE, _TAGS_RE, _OBJECT_RE):
        match = pattern.match(path)
        if match:
            scopes = [f"repository:{match['name']}:{actions}"]
            source = request.url.params.get("from")
            if source and request.url.params.get("mount"):
                scopes.append(f"repository:{source}:pull")
            return tuple(scopes)
    return ()


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


def _scope_key(scopes: tuple[str, ...]) -> str:
    return " ".join(sorted(scopes))


class RegistryAuth(httpx.Auth):
    """Thread-safe registry auth. ``token_http`` fetches Bearer tokens (never this auth)."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        token_http: httpx.Client,
        *,
        origin: httpx.URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._origin = origin
        self._credentials = credentials
        self._token_http = token_http
        self._clock = clock
        self._lock = threading.Lock()
        self._basic = False
        self._bearer: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._warned_realms: set[str] = set()

    def set_origin(self, origin: httpx.URL) -> None:
        """The registry's scheme was settled (``--insecure`` fell back to plain HTTP)."""
        with self._lock:
            self._origin = origin

    def __repr__(self) -> str:
        user = self._credentials.username if self._credentials else None
        return f"RegistryAuth(registry={self._registry!r}, username={user!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not _same_origin(request.url, self._origin):
            request.headers.pop("Authorization", None)
            yield request  # credentials are for the registry only, never another host
            return
        scopes = predicted_scopes(request)
        sent = self._header_up_front(scopes)
        if sent:
            request.headers["Authorization"] = sent
        response = yield request
        for _attempt in range(2):
            if response.status_code != 401 or not _replayable(request):
                return
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if challenge is None:
                return
            header = self._answer(challenge, scopes)
            if header is None or header == sent:
                return
            sent = header
            request.headers["Authorization"] = header
            response = yield request

    def _header_up_front(self, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            if self._basic and self._credentials is not None:
                return _basic_header(self._credentials)
            if self._bearer is None:
                return None
            token = self._fresh_token(_scope_key(scopes))
            if token is None and scopes:
                token = self._fetch_token(self._bearer, scopes)
        return f"Bearer {token.value}" if token else None

    def _answer(self, challenge: Challenge, predicted: tuple[str, ...]) -> str | None:
        if challenge.scheme == "basic":
            if self._credentials is None:
                return None
            with self._lock:
                self._basic = True
            return _basic_header(self._credentials)
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return None
        with self._lock:
            self._bearer = challenge
            token = self._fetch_token(challenge, challenge.scopes)
            if predicted:
                self._tokens[_scope_key(predicted)] = token
        return f"Bearer {token.value}"

    def _fresh_token(self, key: str) -> _Token | None:
        token = self._tokens.get(key)
        if token is not None and token.expires_at > self._clock():
            return token
        return None

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        """GET the realm with ``service`` and one ``scope`` per scope; cache the grant."""
        realm = challenge.params["realm"]
        self._check_realm(realm)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", scope) for scope in scopes)
        auth = None
        if self._credentials is not None:
            auth = httpx.BasicAuth(self._credentials.username, self._credentials.password)
        with (
            translated_transport_errors("GET", realm, self._registry),
            self._token_http.stream("GET", realm, params=params, auth=auth) as response,
        ):
            return self._grant(response, realm, scopes)

    def _check_realm(self, realm: str) -> None:
        """Basic credentials go to the realm over HTTPS whenever the registry is HTTPS; a
        realm on another host is allowed (as Docker does), with a warning."""
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL as exc:
            raise ProtocolError(
                f"{self._registry} names an invalid token realm {redact_url(realm)!r}"
            ) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ProtocolError(
                f"{self._registry} names a token realm that is no http(s) URL: {redact_url(realm)}",
                url=redact_url(realm),
            )
        if self._credentials is None:
            return
        if self._origin.scheme == "https" and url.scheme != "https":
            raise ProtocolError(
                f"{self._registry} is served over HTTPS but sends clients to the plain-HTTP "
                f"token realm {redact_url(realm)}: refusing to send the credentials there in "
                "cleartext; configure an https:// realm on the registry (auth.token.realm)",
                url=redact_url(realm),
            )
        if url.host != self._origin.host and realm not in self._warned_realms:
            self._warned_realms.add(realm)
            log.warning(
                "the token realm %s of %s is on another host: sending the "
                "credentials there, as Docker does",
                redact_url(realm),
                self._registry,
            )

    def _grant(self, response: httpx.Response, realm: str, scopes: tuple[str, ...]) -> _Token:
        if response.status_code != 200:
            error = error_from_response(response, subject="other", registry=self._registry)
            if isinstance(error, UnauthorizedError) or response.status_code == 401:
                raise UnauthorizedError(
                    f"authentication failed for {self._registry}: the token server "
                    f"{redact_url(realm)} refused the credentials; check the credentials "
                    "(login/password, license token or docker config)",
                    url=redact_url(response.request.url),
                    status=response.status_code,
                    code=error.code,
                )
            raise error
        token = self._token_from(response)
        self._tokens[_scope_key(scopes)] = token
        return token

    def _token_from(self, response: httpx.Response) -> _Token:
        url = redact_url(response.request.url)
        data = read_capped(response, _MAX_TOKEN_BODY, "token answer")
        try:
            body = json.loads(data)
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ProtocolError(
                f"bad token answer from {url}: {exc}", url=url, status=response.status_code
            ) from exc
        if not isinstance(value, str) or not value:
            raise ProtocolError(
                f"token answer from {url} has neither 'token' nor 'access_token'",
                url=url,
                status=response.status_code,
            )
        if not _TOKEN_RE.match(value):
            raise ProtocolError(
                f"token answer from {url} holds a token that is no valid HTTP "
                "header value (not shown); the token server is broken",
                url=url,
                status=response.status_code,
            )
        margin = min(_EXPIRY_MARGIN, lifetime / 2)
        return _Token(value, self._clock() + lifetime - margin)


def _basic_header(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _replayable(request: httpx.Request) -> bool:
    """Whether the body can be sent again (bytes, or nothing), unlike a streamed file."""
    return isinstance(request.stream, httpx.ByteStream)


def _same_origin(url: httpx.URL, origin: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)
