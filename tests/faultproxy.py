"""A fault-injecting HTTP proxy between d8mirror and a real registry (test infrastructure).

    with FaultProxy("127.0.0.1:5001", rate=0.1, seed=7) as proxy:
        RegistryClient(proxy.host, tls=TLSOptions(insecure=True))   # talks through the proxy

One request per connection (answers carry ``Connection: close``) unless ``keep_alive``: then
a connection serves request after request until a fault ends it, and ``reused_only`` limits
faults to the second and later requests of a connection (a pooled, reused connection). Each
request is forwarded to the upstream
registry with the client's ``Host`` header, so the upload ``Location`` URLs the registry writes
point back at the proxy. With probability ``rate`` (seeded ``random.Random``) a request gets a
fault chosen from ``kinds`` that fits it:

    500 / 502 / 503     answered by the proxy, never forwarded
    429                 answered by the proxy with ``Retry-After: 0`` or ``1``
    slow                forwarded after a pause of ``slow_seconds``
    reset               forwarded; the connection is reset (RST) half-way through the body, or
                        before any answer when there is no body ("applied, answer lost")
    truncate            forwarded; half the body, then a clean close
    flip                forwarded; one byte of a blob body inverted (GET .../blobs/...)
    length              forwarded; a wrong Content-Length (bigger or smaller than the body)
    drop                read, never forwarded; the connection is closed without an answer (a
                        keep-alive connection the server gave up on); not in ``ALL_KINDS``

``intercept(request)`` may answer a request itself (endless tag lists, redirects...).
``hold(request)`` parks a matching exchange until :meth:`release` (bounded): a GET after half
its body went out, anything else before it is forwarded -- the moment to kill a client.
``exchanges`` records every answered request (method, path, Range header, bytes sent, whole).
Everything is bounded: socket timeouts, a request-size cap, daemon handler threads, and
``stop()`` shuts the listener down. 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

STATUS_KINDS = ("500", "502", "503", "429")
BODY_KINDS = ("reset", "truncate", "flip", "length")
ALL_KINDS = (*STATUS_KINDS, "slow", *BODY_KINDS)

_MAX_HEAD = 64 << 10
_MAX_BODY = 256 << 20
_TIMEOUT = 30.0
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
    }
)
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    307: "Temporary Redirect",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    head_only: bool = False  # a HEAD answer: keep Content-Length, send no body

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    @classmethod
    def error(
        cls, status: int, code: str = "UNAVAILABLE", extra: Iterable[tuple[str, str]] = ()
    ) -> Response:
        body = json.dumps({"errors": [{"code": code, "message": "injected fault"}]}).encode()
        return cls(status, [("Content-Type", "application/json"), *extra], body)


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    range: str | None
    status: int
    body_sent: int
    complete: bool  # the whole answer went out


@dataclass(frozen=True)
class FaultRecord:
    method: str
    path: str
    kind: str


Intercept = Callable[[Request], Response | None]
Matcher = Callable[[Request], bool]


class FaultProxy:
    """See the module docstring."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[str] = ALL_KINDS,
        match: Matcher | None = None,
        intercept: Intercept | None = None,
        slow_seconds: float = 0.3,
        hold: Matcher | None = None,
        hold_timeout: float = 60.0,
        keep_alive: bool = False,
        reused_only: bool = False,
    ) -> None:
        self.upstream = upstream
        self.rate = rate
        self.kinds = tuple(kinds)
        self.match = match
        self.intercept = intercept
        self.slow_seconds = slow_seconds
        self.hold = hold
        self.hold_timeout = hold_timeout
        self.keep_alive = keep_alive
        self.reused_only = reused_only
        self.reused_requests = 0
        self._released = threading.Event()
        self.holding = 0
        self.exchanges: list[Exchange] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.faults: list[FaultRecord] = []
        self.seen: list[tuple[str, str]] = []
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="faultproxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def release(self) -> None:
        """Let every held exchange go on (and stop holding new ones)."""
        self.hold = None
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def count(self, method: str, substring: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.seen if m == method and substring in p)

    def completed(self, method: str, substring: str) -> list[Exchange]:
        with self._lock:
            return [
                e
                for e in self.exchanges
                if e.method == method and substring in e.path and e.complete
            ]

    def _record(self, request: Request, status: int, sent: int, complete: bool) -> None:
        with self._lock:
            self.exchanges.append(
                Exchange(
                    request.method, request.path, request.header("Range"), status, sent, complete
                )
            )

    def _park(self) -> None:
        with self._lock:
            self.holding += 1
        try:
            self._released.wait(self.hold_timeout)
        finally:
            with self._lock:
                self.holding -= 1

    def fault_kinds(self) -> dict[str, int]:
        with self._lock:
            found: dict[str, int] = {}
            for record in self.faults:
                found[record.kind] = found.get(record.kind, 0) + 1
            return found

    # -- one connection = one request -----------------------------------------------------
    def _pick(self, request: Request, reused: bool = False) -> str | None:
        if self.match is not None and not self.match(request):
            return None
        if self.reused_only and not reused:
            return None
        has_body = request.method == "GET"
        is_blob = has_body and "/blobs/sha256:" in request.path
        fitting = [
            k
            for k in self.kinds
            if k in (*STATUS_KINDS, "slow", "reset", "drop")
            or (has_body and k in ("truncate", "length"))
            or (is_blob and k == "flip")
        ]
        with self._lock:
            if not fitting or self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(fitting)
            self.faults.append(FaultRecord(request.method, request.path, kind))
            return kind

    def _coin(self) -> float:
        with self._lock:
            return self._rng.random()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(_TIMEOUT)
        try:
            served = 0
            while True:
                request = _read_request(conn)
                if request is None:
                    return
                reused = served > 0
                served += 1
                with self._lock:
                    self.seen.append((request.method, request.path))
                    self.reused_requests += reused
                if not self._serve(conn, request, reused) or not self.keep_alive:
                    return
        except (OSError, ValueError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _serve(self, conn: socket.socket, request: Request, reused: bool) -> bool:
        """Answer one request; whether the connection may serve another one."""
        keep = self.keep_alive
        answer = self.intercept(request) if self.intercept is not None else None
        if answer is not None:
            _send(conn, answer, close=not keep)
            return keep
        kind = self._pick(request, reused)
        if kind == "drop":
            return False
        if kind in STATUS_KINDS:
            status = int(kind)
            extra = [("Retry-After", "1" if self._coin() < 0.3 else "0")] if status == 429 else []
            _send(
                conn,
                Response.error(
                    status, "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE", extra
                ),
                close=not keep,
            )
            return keep
        if kind == "slow":
            time.sleep(self.slow_seconds)
        held = self.hold is not None and self.hold(request)
        if held and request.method != "GET":
            self._park()
        response = _forward(self.upstream, request)
        if held and request.method == "GET" and len(response.body) > 1:
            half = len(response.body) // 2
            _send(conn, response, body_limit=half)
            self._record(request, response.status, half, False)
            self._park()
            conn.sendall(response.body[half:])
            self._record(request, response.status, len(response.body), True)
            return False
        return self._answer(conn, request, response, kind)

    def _answer(
        self, conn: socket.socket, request: Request, response: Response, kind: str | None
    ) -> bool:
        body = response.body
        has_body = bool(body) and not response.head_only
        if kind == "reset":
            if has_body:
                _send(conn, response, body_limit=len(body) // 2)
            self._record(request, response.status, len(body) // 2, False)
            _reset(conn)
            return False
        if kind == "truncate" and len(body) > 1 and not response.head_only:
            _send(conn, response, body_limit=len(body) // 2)
            self._record(request, response.status, len(body) // 2, False)
            conn.shutdown(socket.SHUT_WR)
            return False
        if kind == "flip" and has_body and response.status in (200, 206):
            position = int(self._coin() * len(body))
            flipped = bytearray(body)
            flipped[position] ^= 0xFF
            response = Response(response.status, response.headers, bytes(flipped))
        if kind == "length" and has_body:
            wrong = len(body) + 7 if self._coin() < 0.5 else max(0, len(body) // 2)
            _send(conn, response, declared_length=wrong, body_limit=min(wrong, len(body)))
            self._record(request, response.status, min(wrong, len(body)), False)
            conn.shutdown(socket.SHUT_WR)
            return False
        _send(conn, response, close=not self.keep_alive)
        self._record(
            request,
            response.status,
            0 if response.head_only else len(response.body),
            kind != "flip",
        )
        return self.keep_alive


# -- HTTP/1.1 framing ---------------------------------------------------------------------------
def _read_until(conn: socket.socket, buffer: bytearray, marker: bytes, limit: int) -> int:
    while True:
        index = buffer.find(marker)
        if index >= 0:
            return index
        if len(buffer) > limit:
            raise ValueError("header too large")
        piece = conn.recv(65536)
        if not piece:
            raise ValueError("connection closed before the end of the header")
        buffer += piece


def _read_exact(conn: socket.socket, buffer: bytearray, length: int) -> bytes:
    if length > _MAX_BODY:
        raise ValueError("body too large")
    while len(buffer) < length:
        piece = conn.recv(min(1 << 20, length - len(buffer)))
        if not piece:
            raise ValueError("connection closed mid-body")
        buffer += piece
    data = bytes(buffer[:length])
    del buffer[:length]
    return data


def _read_chunked(conn: socket.socket, buffer: bytearray) -> bytes:
    body = bytearray()
    while True:
        end = _read_until(conn, buffer, b"\r\n", _MAX_HEAD)
        size = int(bytes(buffer[:end]).split(b";", 1)[0].strip() or b"0", 16)
        del buffer[: end + 2]
        if size == 0:
            end = _read_until(conn, buffer, b"\r\n", _MAX_HEAD)  # trailers: none expected
            del buffer[: end + 2]
            return bytes(body)
        body += _read_exact(conn, buffer, size)
        if len(body) > _MAX_BODY:
            raise ValueError("body too large")
        end = _read_until(conn, buffer, b"\r\n", _MAX_HEAD)
        del buffer[: end + 2]


def _parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _read_body(
    conn: socket.socket, buffer: bytearray, headers: list[tuple[str, str]], *, until_eof: bool
) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        return _read_chunked(conn, buffer)
    if "content-length" in values:
        return _read_exact(conn, buffer, int(values["content-length"]))
    if not until_eof:
        return b""
    while True:
        piece = conn.recv(1 << 20)
        if not piece:
            return bytes(buffer)
        buffer += piece
        if len(buffer) > _MAX_BODY:
            raise ValueError("body too large")


def _read_request(conn: socket.socket) -> Request | None:
    buffer = bytearray()
    try:
        end = _read_until(conn, buffer, b"\r\n\r\n", _MAX_HEAD)
    except ValueError:
        return None
    start, headers = _parse_head(bytes(buffer[:end]))
    del buffer[: end + 4]
    method, target, _version = start.split(" ", 2)
    body = _read_body(conn, buffer, headers, until_eof=False)
    return Request(method, target, headers, body)


def _forward(upstream: str, request: Request) -> Response:
    host, port = upstream.rsplit(":", 1)
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _HOP_HEADERS]
    if request.body or request.method in ("PUT", "POST", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    lines.append("Connection: close")
    with socket.create_connection((host, int(port)), timeout=_TIMEOUT) as upstream_conn:
        upstream_conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
        buffer = bytearray()
        end = _read_until(upstream_conn, buffer, b"\r\n\r\n", _MAX_HEAD)
        start, headers = _parse_head(bytes(buffer[:end]))
        del buffer[: end + 4]
        status = int(start.split(" ", 2)[1])
        if request.method == "HEAD" or status in (204, 304):
            return Response(status, headers, b"", head_only=True)
        body = _read_body(upstream_conn, buffer, headers, until_eof=True)
    return Response(status, headers, body)


def _send(
    conn: socket.socket,
    response: Response,
    *,
    declared_length: int | None = None,
    body_limit: int | None = None,
    close: bool = True,
) -> None:
    reason = _REASONS.get(response.status, "Status")
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in _HOP_HEADERS]
    if response.head_only:
        length = response.header("Content-Length")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        body = b""
    else:
        body = response.body
        lines.append(f"Content-Length: {len(body) if declared_length is None else declared_length}")
    if close:
        lines.append("Connection: close")
    if body_limit is not None:
        body = body[:body_limit]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _reset(conn: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
