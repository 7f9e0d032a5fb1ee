"""Private real-registry test bed for the registry client tests.

Each fixture prefers the shared fixture of the same role from ``tests/conftest.py`` when it
exists, and otherwise starts its own ``docker-registry`` (plus an in-process token server).
No tests live here.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from d8mirror.hashing import sha256_bytes_digest

REGISTRY_BIN = "/usr/bin/docker-registry"
USERNAME, PASSWORD = "testuser", "testpass"
_LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_cert(directory: Path, name: str) -> tuple[Path, Path, rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return crt, pem, key, cert


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues RS256 JWTs granting exactly the requested scopes to testuser/testpass."""

    def __init__(self, directory: Path) -> None:
        self.crt, _, self._key, self._cert = make_cert(directory, "token")
        self.port = free_port()
        self.requests: list[list[str]] = []
        server = self
        handler = type("Handler", (_TokenHandler,), {"token_server": server})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def issue(self, scopes: list[str], user: str) -> str:
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "test-issuer",
            "sub": user,
            "aud": "test-registry",
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _TokenHandler(BaseHTTPRequestHandler):
    token_server: TokenServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        scopes = query.get("scope", [])
        self.token_server.requests.append(scopes)
        expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {"token": self.token_server.issue(scopes, USERNAME), "expires_in": 300}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class LocalRegistry:
    """A docker-registry process on 127.0.0.1 (same attributes as the shared RegistryServer)."""

    host: str
    root: Path
    insecure: bool
    ca_file: str | None
    username: str | None
    password: str | None
    log: Path
    process: subprocess.Popen[bytes] | None = None
    token_server: TokenServer | None = None
    _cleared: int = field(default=0)

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"

    def requests(self) -> list[tuple[str, str, int]]:
        lines = self.log.read_text(errors="replace").splitlines()[self._cleared :]
        found = []
        for line in lines:
            match = _LOG_RE.search(line)
            if match:
                found.append((match["method"], match["path"], int(match["status"])))
        return found

    def clear_requests(self) -> None:
        self._cleared = len(self.log.read_text(errors="replace").splitlines())

    def count(self, method: str, path_substring: str) -> int:
        return sum(1 for m, p, _ in self.requests() if m == method and path_substring in p)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.token_server is not None:
            self.token_server.stop()


def start_registry(kind: str) -> LocalRegistry:
    """kind: plain, basic, tls, token."""
    base = Path(tempfile.mkdtemp(prefix=f"d8reg-{kind}-"))
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(base / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-only-secret"},
        "health": {"storagedriver": {"enabled": False}},
    }
    ca_file, token_server = None, None
    if kind in ("basic", "tls"):
        htpasswd = base / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{USERNAME}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
    if kind == "tls":
        crt, key, _, _ = make_cert(base, "tls")
        config["http"]["tls"] = {"certificate": str(crt), "key": str(key)}
        ca_file = str(crt)
    if kind == "token":
        token_server = TokenServer(base)
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": "test-registry",
                "issuer": "test-issuer",
                "rootcertbundle": str(token_server.crt),
            }
        }
    cfg = base / "config.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    log = base / "registry.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(cfg)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    authed = kind != "plain"
    registry = LocalRegistry(
        host=f"127.0.0.1:{port}",
        root=base / "data",
        insecure=kind != "tls",
        ca_file=ca_file,
        username=USERNAME if authed else None,
        password=PASSWORD if authed else None,
        log=log,
        process=process,
        token_server=token_server,
    )
    _wait_ready(registry)
    return registry


def _wait_ready(registry: LocalRegistry) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{registry.url}/v2/", verify=False, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.02)
    registry.stop()
    raise RuntimeError(f"docker-registry at {registry.host} did not start")


def _registry_fixture(shared_name: str, kind: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
        if os.environ.get("D8_REGISTRY_TESTS_LOCAL_BED") != "1":
            try:
                yield request.getfixturevalue(shared_name)
                return
            except pytest.FixtureLookupError:
                pass
        local = start_registry(kind)
        try:
            yield local
        finally:
            local.stop()
            shutil.rmtree(local.root.parent, ignore_errors=True)

    return fixture


reg_plain = _registry_fixture("registry", "plain")
reg_basic = _registry_fixture("basic_registry", "basic")
reg_tls = _registry_fixture("tls_registry", "tls")
reg_token = _registry_fixture("token_registry", "token")


def sha256(data: bytes) -> str:
    return sha256_bytes_digest(data)


def client_for(server: Any, **overrides: Any) -> Any:
    """A RegistryClient for a bed registry, with its credentials and TLS settings."""
    from d8mirror.registry import Credentials, RegistryClient, TLSOptions

    credentials = None
    if server.username is not None:
        credentials = Credentials(server.username, server.password)
    tls = TLSOptions(insecure=server.insecure, ca_file=server.ca_file)
    options: dict[str, Any] = {"credentials": credentials, "tls": tls, "timeout": 30.0}
    options.update(overrides)
    return RegistryClient(server.host, **options)


def push_image(
    client: Any,
    tmp: Path,
    repository: str,
    tag: str,
    layer: bytes,
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
) -> tuple[bytes, str]:
    """Upload a config and one layer, then a manifest (OCI or Docker) under ``tag``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    docker = "docker" in media_type
    blobs = [
        (
            config,
            "application/vnd.docker.container.image.v1+json"
            if docker
            else "application/vnd.oci.image.config.v1+json",
        ),
        (
            layer,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            if docker
            else "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
    ]
    for data, _ in blobs:
        path = tmp / sha256(data).split(":")[1]
        path.write_bytes(data)
        client.upload_blob(repository, sha256(data), path)
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": blobs[0][1], "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": blobs[1][1], "digest": sha256(layer), "size": len(layer)}],
    }
    data = json.dumps(manifest, indent=3).encode()  # unusual spacing: bytes must be kept
    digest = client.put_manifest(repository, tag, data, media_type)
    return data, digest


def blob_data_path(server: Any, digest: str) -> Path:
    hexdigest = digest.split(":")[1]
    blobs = Path(server.root) / "docker/registry/v2/blobs/sha256"
    return blobs / hexdigest[:2] / hexdigest / "data"
