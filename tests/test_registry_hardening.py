"""The registry client against hostile loopback servers and the real test-bed registries
(issue 13, 12.7): bodies capped while they stream, a stalled or dripping registry aborted by the
transfer-rate floor, D8_MIRROR_TIMEOUT as a per-request deadline, Basic credentials kept off a
plain-HTTP token realm of an HTTPS registry, a broken token kept out of error text, and
``--insecure`` trying HTTPS before plain HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from d8mirror.blobstore import BlobStore
from d8mirror.errors import ProtocolError, RegistryNetworkError, ServerError, TLSError
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.registry import Credentials, RegistryClient, TLSOptions
from d8mirror.registry._errors import redact_auth
from d8mirror.retry import RetryPolicy
from testbed.registry_server import RegistryServer
from testbed.token_server import SelfSignedCertificate, make_self_signed_certificate

MiB = 1 << 20
#: What a hostile server sends at most, so that even the unfixed client ends.
SEND_BOUND = 96 * MiB
PASSWORD = "pw-never-in-clear-7f3a"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    conn: socket.socket
    server: Hostile

    def send(self, data: bytes) -> bool:
        try:
            self.conn.sendall(data)
        except OSError:
            return False
        self.server.sent += len(data)
        return True

    def head(self, status: str, headers: dict[str, str]) -> bool:
        lines = [
            f"HTTP/1.1 {status}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def answer(self, status: str, body: bytes = b"", **headers: str) -> None:
        self.head(status, {"Content-Length": str(len(body)), **headers})
        self.send(body)

    def wait(self, seconds: float) -> bool:
        """Sleep unless the server stops; False when it stopped."""
        return not self.server.stopping.wait(seconds)


@dataclass
class Hostile:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose every answer the test scripts (one request per
    connection). Bounded: it stops on exit, and handlers bound what they send."""

    handler: Callable[[Exchange], None]
    tls: ssl.SSLContext | None = None
    sent: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._thread.join(10)
        self._sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, rest = data.partition(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, path, _version = request_line.split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
            }
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                piece = conn.recv(65536)
                if not piece:
                    break
                rest += piece
            self.requests.append((method, path, headers))
            self.handler(Exchange(method, path, headers, conn, self))
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            conn.close()


def _endless(exchange: Exchange, prefix: bytes, filler: bytes) -> None:
    """200 with no Content-Length (body until close) that never ends on its own."""
    if not exchange.head("200 OK", {"Content-Type": "application/json"}):
        return
    if not exchange.send(prefix):
        return
    piece = filler * (65536 // len(filler))
    while exchange.server.sent < SEND_BOUND and exchange.send(piece):
        pass


def _plain_client(host: str) -> RegistryClient:
    return RegistryClient(host, tls=TLSOptions(insecure=True))


# -- every body capped while it streams ------------------------------------------------------


def _tags_forever(exchange: Exchange) -> None:
    _endless(exchange, b'{"name":"hostile","tags":[', b'"aaaaaaaaaaaaaaa",')


def _catalog_forever(exchange: Exchange) -> None:
    _endless(exchange, b'{"repositories":[', b'"bbbbbbbbbbbbbbb",')


def _token_forever(exchange: Exchange) -> None:
    if exchange.path.startswith("/token"):
        _endless(exchange, b'{"token":"', b"cccccccccccccccc")
    else:
        realm = f"http://{exchange.server.host}/token"
        exchange.answer(
            "401 Unauthorized", b"{}", **{"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'}
        )


def _error_forever(exchange: Exchange) -> None:
    if exchange.path == "/v2/":
        exchange.answer("200 OK", b"{}")
        return
    if not exchange.head("500 Internal Server Error", {"Content-Type": "text/plain"}):
        return
    piece = b"e" * 65536
    while exchange.server.sent < SEND_BOUND and exchange.send(piece):
        pass


@pytest.mark.parametrize(
    ("handler", "call", "error", "cap"),
    [
        (_tags_forever, lambda c: c.list_tags("hostile"), ProtocolError, "16777216 byte limit"),
        (_catalog_forever, lambda c: c.list_repositories(), ProtocolError, "16777216 byte limit"),
        (_token_forever, lambda c: c.list_tags("hostile"), ProtocolError, "1048576 byte limit"),
        (
            _error_forever,
            lambda c: c.put_manifest("hostile", "v1", b"{}", OCI_INDEX),
            ServerError,
            "answered 500",
        ),
    ],
    ids=["tags", "catalog", "token", "error-body"],
)
def test_an_endless_answer_is_cut_at_its_cap_while_it_streams(
    handler: Callable[[Exchange], None],
    call: Callable[[RegistryClient], object],
    error: type[Exception],
    cap: str,
) -> None:
    with Hostile(handler) as server, _plain_client(server.host) as client:
        with pytest.raises(error) as caught:
            call(client)
        time.sleep(0.2)  # let the sender notice the closed socket
        sent = server.sent
    assert cap in str(caught.value)
    assert f"http://{server.host}/" in str(caught.value)
    # Read as it streamed, not after: the server got to send little more than the cap
    # (the unfixed client read all 96 MiB before looking at the size).
    assert sent < 40 * MiB, sent


# -- a stalled registry cannot hang a run ------------------------------------------------------


def _headers_then_silence(exchange: Exchange) -> None:
    if exchange.head("200 OK", {"Content-Type": OCI_INDEX, "Content-Length": "500"}):
        exchange.wait(25)


def _drip(exchange: Exchange) -> None:
    if not exchange.head(
        "200 OK", {"Content-Type": "application/octet-stream", "Content-Length": "200"}
    ):
        return
    for _ in range(200):  # one byte every 0.25 s: 50 s in all
        if not exchange.wait(0.25) or not exchange.send(b"d"):
            return


def _slow_but_steady(exchange: Exchange) -> None:
    if not exchange.head(
        "200 OK", {"Content-Type": "application/octet-stream", "Content-Length": str(4 * MiB)}
    ):
        return
    for _ in range(256):  # 16 KiB every 0.1 s: above any floor, 25 s
        if not exchange.wait(0.1) or not exchange.send(b"s" * 16384):
            return


DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("handler", "call", "env", "message"),
    [
        (
            _headers_then_silence,
            lambda c, _t: c.get_manifest("hostile", "v1"),
            {"D8_MIRROR_STALL_TIMEOUT": "1s"},
            "timed out",
        ),
        (
            _drip,
            lambda c, t: c.fetch_blob("hostile", DIGEST, t / "blob", size=200),
            {"D8_MIRROR_STALL_TIMEOUT": "1s"},
            "stalled: fewer than 1024 bytes in 1 s",
        ),
        (
            _slow_but_steady,
            lambda c, t: c.fetch_blob("hostile", DIGEST, t / "blob"),
            {"D8_MIRROR_TIMEOUT": "2s"},
            "took longer than 2 s (D8_MIRROR_TIMEOUT)",
        ),
    ],
    ids=["headers-then-silence", "one-byte-drip", "request-deadline"],
)
def test_a_stalled_or_endless_transfer_is_aborted_quickly(
    handler: Callable[[Exchange], None],
    call: Callable[[RegistryClient, Path], object],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with Hostile(handler) as server, _plain_client(server.host) as client:
        started = time.monotonic()
        with pytest.raises(RegistryNetworkError) as caught:
            call(client, tmp_path)
        elapsed = time.monotonic() - started
    assert message in str(caught.value)
    assert elapsed < 12, elapsed  # the server would have gone on for 25-50 s


# -- credentials and tokens --------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCertificate:
    return make_self_signed_certificate(tmp_path_factory.mktemp("hostile-tls"), "hostile")


def _server_tls(cert: SelfSignedCertificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


def _token_answer(exchange: Exchange) -> None:
    exchange.answer(
        "200 OK",
        json.dumps({"token": "good-token"}).encode(),
        **{"Content-Type": "application/json"},
    )


def _registry_with_realm(realm: Callable[[], str]) -> Callable[[Exchange], None]:
    def handler(exchange: Exchange) -> None:
        if exchange.headers.get("authorization") == "Bearer good-token":
            exchange.answer("200 OK", b"{}", **{"Content-Type": "application/json"})
            return
        exchange.answer(
            "401 Unauthorized",
            b"{}",
            **{"WWW-Authenticate": f'Bearer realm="{realm()}",service="hostile"'},
        )

    return handler


def test_basic_credentials_never_go_to_a_plain_http_realm_of_an_https_registry(
    certificate: SelfSignedCertificate,
) -> None:
    with (
        Hostile(_token_answer) as realm_server,
        Hostile(
            _registry_with_realm(lambda: f"http://{realm_server.host}/token"),
            tls=_server_tls(certificate),
        ) as registry,
        RegistryClient(
            registry.host,
            credentials=Credentials("user", PASSWORD),
            tls=TLSOptions(ca_file=str(certificate.cert_file)),
        ) as client,
        pytest.raises(ProtocolError, match="plain-HTTP token realm") as caught,
    ):
        client.ping()
    assert PASSWORD not in str(caught.value)
    assert not [h for _m, _p, h in realm_server.requests if "authorization" in h]


def test_a_realm_on_another_host_gets_the_credentials_with_a_warning(
    certificate: SelfSignedCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    """As Docker does: the registry is 127.0.0.1, its realm names localhost."""
    tls = _server_tls(certificate)
    with (
        Hostile(_token_answer, tls=tls) as realm_server,
        Hostile(
            _registry_with_realm(lambda: f"https://localhost:{realm_server.port}/t"), tls=tls
        ) as registry,
        RegistryClient(
            registry.host,
            credentials=Credentials("user", PASSWORD),
            tls=TLSOptions(ca_file=str(certificate.cert_file)),
        ) as client,
        caplog.at_level(logging.WARNING, logger="d8mirror.registry"),
    ):
        client.ping()
    assert [
        h for _m, _p, h in realm_server.requests if h.get("authorization", "").startswith("Basic ")
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"https://localhost:{realm_server.port}/t" in w and "another host" in w for w in warnings
    ), warnings
    assert PASSWORD not in caplog.text


SECRET_TOKEN = "tok\nSECRET-TOKEN-VALUE-99"


def _bad_token(exchange: Exchange) -> None:
    if exchange.path.startswith("/token"):
        exchange.answer(
            "200 OK",
            json.dumps({"token": SECRET_TOKEN}).encode(),
            **{"Content-Type": "application/json"},
        )
    else:
        realm = f"http://{exchange.server.host}/token"
        exchange.answer(
            "401 Unauthorized", b"{}", **{"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'}
        )


def test_a_token_httpx_would_refuse_never_appears_in_error_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        Hostile(_bad_token) as server,
        _plain_client(server.host) as client,
        caplog.at_level(logging.DEBUG),
        pytest.raises(ProtocolError) as caught,
    ):  # not a retried network error
        client.list_tags("hostile")
    text = f"{caught.value} {caught.value.url} {caplog.text}"
    assert "SECRET-TOKEN-VALUE" not in text
    assert "not shown" in str(caught.value)


def test_authorization_values_are_scrubbed_from_transport_error_text() -> None:
    assert (
        redact_auth("Illegal header value b'Bearer abc\\nSECRET'")
        == "Illegal header value b'Bearer REDACTED"
    )
    assert "dXNlcjpwdw" not in redact_auth("b'Basic dXNlcjpwdw=='")


# -- --insecure: HTTPS first, then plain HTTP -------------------------------------------------


def test_insecure_uses_https_when_the_registry_speaks_it(tls_registry: RegistryServer) -> None:
    """d8's --insecure (go-containerregistry's insecure registry) tries HTTPS first; the old
    client went straight to plain HTTP and failed against an HTTPS registry."""
    assert tls_registry.ca_file
    with tls_registry.client(tls=TLSOptions(insecure=True, ca_file=tls_registry.ca_file)) as client:
        client.ping()
        assert client.scheme == "https"


def test_insecure_falls_back_to_plain_http(registry: RegistryServer) -> None:
    with registry.client(tls=TLSOptions(insecure=True)) as client:
        client.ping()
        assert client.scheme == "http"


def test_without_insecure_a_plain_http_loopback_registry_is_not_downgraded(
    registry: RegistryServer,
) -> None:
    with registry.client(tls=TLSOptions()) as client:
        with pytest.raises(TLSError):
            client.ping()
        assert client.scheme == "https"


def test_insecure_reports_the_tls_failure_of_an_https_registry_it_cannot_verify(
    tls_registry: RegistryServer,
) -> None:
    with (
        tls_registry.client(tls=TLSOptions(insecure=True)) as client,
        pytest.raises(TLSError, match="certificate verification failed"),
    ):
        client.ping()


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "D8_MIRROR_TIMEOUT",
        "D8_MIRROR_STALL_TIMEOUT",
        "D8_MIRROR_STALL_BYTES",
        "D8_MIRROR_IMAGE_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    yield


# -- an overall deadline per image ----------------------------------------------------------

LAYER_DIGEST = "sha256:" + "1" * 64
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()
IMAGE_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": EMPTY_DIGEST,
            "size": 0,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": LAYER_DIGEST,
                "size": 4 * MiB,
            }
        ],
    }
).encode()
IMAGE_DIGEST = "sha256:" + hashlib.sha256(IMAGE_MANIFEST).hexdigest()


def _slow_image(exchange: Exchange) -> None:
    if exchange.path.endswith(f"/manifests/{IMAGE_DIGEST}"):
        exchange.answer(
            "200 OK",
            IMAGE_MANIFEST,
            **{
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": IMAGE_DIGEST,
            },
        )
    elif exchange.path.endswith(f"/blobs/{EMPTY_DIGEST}"):
        exchange.answer("200 OK", b"", **{"Content-Type": "application/octet-stream"})
    elif "/blobs/" in exchange.path:
        _slow_but_steady(exchange)
    else:
        exchange.answer("200 OK", b"{}")


def test_an_image_that_keeps_trickling_in_is_abandoned_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast enough for the rate floor, retried within the budget, but the image as a whole
    must be done within D8_MIRROR_IMAGE_TIMEOUT."""
    monkeypatch.setenv("D8_MIRROR_IMAGE_TIMEOUT", "3s")
    with Hostile(_slow_image) as server, _plain_client(server.host) as client:
        fetcher = ImageFetcher(
            client, BlobStore(tmp_path / "store"), blob_workers=1, retry=RetryPolicy(budget=60.0)
        )
        started = time.monotonic()
        with pytest.raises(RegistryNetworkError, match="D8_MIRROR_IMAGE_TIMEOUT") as caught:
            fetcher.image("hostile/slow", IMAGE_DIGEST)
        elapsed = time.monotonic() - started
    assert "not done after 3 s" in str(caught.value)
    assert f"/blobs/{LAYER_DIGEST}" in str(caught.value)
    assert elapsed < 12, elapsed  # the layer alone would take 25 s per try


def _always_503(exchange: Exchange) -> None:
    if exchange.path == "/v2/":
        exchange.answer("200 OK", b"{}")
        return
    exchange.answer(
        "503 Service Unavailable",
        json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "x" * 2000}]}).encode(),
        **{"Content-Type": "application/json"},
    )


def test_error_bodies_do_not_count_as_progress_so_the_budget_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes flowing restart the retry budget, but only those of a successful answer: a
    registry answering 503 with a body is given up when the budget is spent."""
    policy = RetryPolicy(budget=1.0, base_delay=0.05, max_delay=0.05, attempts=100)
    with Hostile(_always_503) as server, _plain_client(server.host) as client:
        started = time.monotonic()
        with pytest.raises(ServerError, match="gave up after"):
            policy.call(lambda: client.list_tags("hostile"))
        elapsed = time.monotonic() - started
        tries = sum(1 for _m, path, _h in server.requests if path.endswith("/tags/list"))
    assert elapsed < 4 and tries < 60, (elapsed, tries)
