"""A Bearer-token server for test registries, and the self-signed certificates of the test bed.

The token server is the Docker "token authentication" flow in miniature: a client that got a
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge from the registry calls
``GET <realm>?service=...&scope=repository:NAME:ACTIONS&scope=...`` with Basic credentials and
gets an RS256 JWT granting exactly the requested scopes. The registry trusts the token because
its ``x5c`` header carries the certificate listed in ``auth.token.rootcertbundle``.

Only 127.0.0.1 is ever bound. Test infrastructure: never used by the product.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOKEN_ISSUER = "d8mirror-testbed-issuer"
TOKEN_SERVICE = "d8mirror-testbed-registry"
TOKEN_LIFETIME_SECONDS = 300


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A PEM certificate + key on disk (the certificate is its own CA)."""

    cert_file: Path
    key_file: Path
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


def make_self_signed_certificate(directory: Path, name: str) -> SelfSignedCertificate:
    """A 2048-bit RSA self-signed CA certificate for ``localhost`` and ``127.0.0.1``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return SelfSignedCertificate(cert_file, key_file, key, cert)


def parse_scope(scope: str) -> dict[str, Any]:
    """``repository:a/b:pull,push`` -> the JWT ``access`` entry (name may not contain ':')."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    """What a client asked the token server for (recorded for assertions)."""

    username: str | None
    scopes: tuple[str, ...]
    granted: bool


class TokenServer:
    """Threaded stdlib HTTP server on 127.0.0.1 issuing RS256 JWTs to known users.

    ``users`` maps username -> password. Every authenticated request gets exactly the
    scopes it asked for, except that users in ``read_only`` are granted only ``pull`` (a real
    read-only credential); a request without valid Basic credentials gets 401.
    """

    def __init__(
        self, directory: Path, users: Mapping[str, str], read_only: Collection[str] = ()
    ) -> None:
        self.certificate = make_self_signed_certificate(directory, "token-signer")
        self._users = dict(users)
        self._read_only = frozenset(read_only)
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        handler = type("_BoundTokenHandler", (_TokenHandler,), {"server_ref": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"TokenServer(realm={self.realm!r})"

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def cert_file(self) -> Path:
        return self.certificate.cert_file

    def start(self) -> TokenServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="testbed-token-server", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[list[str]]:
        """The scopes asked for, one list per token request (in arrival order)."""
        with self._lock:
            return [list(request.scopes) for request in self._requests]

    def token_requests(self) -> list[TokenRequest]:
        """Every token request with its user and outcome."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def authenticate(self, authorization: str | None) -> str | None:
        """The username when ``authorization`` is valid Basic credentials, else None."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if sep and self._users.get(username) == password:
            return username
        return None

    def granted(self, username: str, scopes: list[str]) -> list[str]:
        """The scopes ``username`` gets: all asked for, or only their ``pull`` if read-only."""
        if username not in self._read_only:
            return scopes
        out = []
        for scope in scopes:
            entry = parse_scope(scope)
            actions = ",".join(a for a in entry["actions"] if a == "pull")
            out.append(f"{entry['type']}:{entry['name']}:{actions}")
        return out

    def issue(self, subject: str, scopes: list[str]) -> str:
        """A signed JWT for ``subject`` granting exactly ``scopes``."""
        der = self.certificate.cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [parse_scope(s) for s in scopes],
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.certificate.key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"


class _TokenHandler(BaseHTTPRequestHandler):
    server_ref: TokenServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        scopes = parse_qs(url.query).get("scope", [])
        username = self.server_ref.authenticate(self.headers.get("Authorization"))
        self.server_ref._record(TokenRequest(username, tuple(scopes), username is not None))
        if username is None:
            self._answer(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad or missing credentials"}]},
                {"WWW-Authenticate": 'Basic realm="testbed-token"'},
            )
            return
        token = self.server_ref.issue(username, self.server_ref.granted(username, scopes))
        issued_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._answer(
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "issued_at": issued_at,
            },
        )

    def _answer(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
