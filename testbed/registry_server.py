"""A real OCI registry (CNCF distribution, Debian ``docker-registry``) as a child process.

    with RegistryServer(tmp_dir, auth="htpasswd", tls=True) as registry:
        registry.host        # "127.0.0.1:PORT"
        registry.count("GET", "/blobs/")

Filesystem storage under ``<directory>/data``; config, log, certificates and htpasswd beside it.
The access log is on, so tests can count requests. Test infrastructure: 127.0.0.1 only.

Run in the foreground (for the demo): ``python -m testbed.registry_server --dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import bcrypt
import httpx

from testbed.token_server import (
    TOKEN_ISSUER,
    TOKEN_SERVICE,
    TokenServer,
    make_self_signed_certificate,
)

if TYPE_CHECKING:
    from d8mirror.registry import RegistryClient

REGISTRY_BINARY = "/usr/bin/docker-registry"
DEFAULT_USERS: Mapping[str, str] = {"testuser": "testpass"}
AuthMode = Literal["none", "htpasswd", "token"]

_ACCESS_LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
_START_ATTEMPTS = 3


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def htpasswd_lines(users: Mapping[str, str]) -> str:
    """htpasswd content with bcrypt cost 4 (the registry re-checks the hash on every request)."""
    lines = []
    for username, password in sorted(users.items()):
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{username}:{hashed}\n")
    return "".join(lines)


def parse_access_log(text: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every access-log line in ``text``."""
    found = []
    for match in _ACCESS_LOG_RE.finditer(text):
        found.append((match["method"], match["path"], int(match["status"])))
    return found


class RegistryServer:
    """One ``docker-registry serve`` process on 127.0.0.1 with its own config and storage."""

    def __init__(
        self,
        directory: Path,
        *,
        auth: AuthMode = "none",
        tls: bool = False,
        users: Mapping[str, str] | None = None,
        port: int | None = None,
        binary: str = REGISTRY_BINARY,
        startup_timeout: float = 15.0,
        read_only_users: Collection[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.root = self.directory / "data"
        self.auth: AuthMode = auth
        self.tls = tls
        self._users = dict(users if users is not None else DEFAULT_USERS)
        self._read_only = frozenset(read_only_users)  # token auth only: granted pull alone
        if auth != "none" and not self._users:
            raise ValueError("an authenticated registry needs at least one user")
        self._fixed_port = port
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._port = port or 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = self.directory / "registry.log"
        self._log_offset = 0
        self.ca_file: str | None = None
        self.token_server: TokenServer | None = None

    # -- identity -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def insecure(self) -> bool:
        """True for plain HTTP (what ``--insecure`` means to the clients)."""
        return not self.tls

    @property
    def username(self) -> str | None:
        return None if self.auth == "none" else sorted(self._users)[0]

    @property
    def password(self) -> str | None:
        username = self.username
        return None if username is None else self._users[username]

    @property
    def log_file(self) -> Path:
        return self._log_file

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __repr__(self) -> str:
        return f"RegistryServer({self.url!r}, auth={self.auth!r})"

    def client(self, **options: Any) -> RegistryClient:
        """A :class:`d8mirror.registry.RegistryClient` with this registry's credentials and TLS."""
        from d8mirror.registry import Credentials, RegistryClient, TLSOptions

        credentials = None
        if self.username is not None and self.password is not None:
            credentials = Credentials(self.username, self.password)
        options.setdefault("credentials", credentials)
        options.setdefault("tls", TLSOptions(insecure=self.insecure, ca_file=self.ca_file))
        return RegistryClient(self.host, **options)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> RegistryServer:
        if self._process is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        auth_config = self._prepare_auth()
        tls_config = self._prepare_tls()
        last_error: RegistryStartError | None = None
        for _attempt in range(1 if self._fixed_port else _START_ATTEMPTS):
            self._port = self._fixed_port or free_port()
            config = self._config(auth_config, tls_config)
            try:
                self._spawn(config)
                self._wait_ready()
                return self
            except RegistryStartError as exc:
                last_error = exc
                self._terminate()
                if "address already in use" not in str(exc):
                    break
        self._stop_token_server()
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        self._terminate()
        self._stop_token_server()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_auth(self) -> dict[str, Any] | None:
        if self.auth == "htpasswd":
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text(htpasswd_lines(self._users))
            return {"htpasswd": {"realm": "d8mirror-testbed", "path": str(htpasswd)}}
        if self.auth == "token":
            if self.token_server is None:
                self.token_server = TokenServer(
                    self.directory, self._users, self._read_only
                ).start()
            return {
                "token": {
                    "realm": self.token_server.realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(self.token_server.cert_file),
                }
            }
        return None

    def _prepare_tls(self) -> dict[str, str] | None:
        if not self.tls:
            return None
        certificate = make_self_signed_certificate(self.directory, "registry-tls")
        self.ca_file = str(certificate.cert_file)
        return {"certificate": str(certificate.cert_file), "key": str(certificate.key_file)}

    def _config(self, auth: dict[str, Any] | None, tls: dict[str, str] | None) -> Path:
        http: dict[str, Any] = {"addr": self.host, "secret": "d8mirror-testbed-secret"}
        if tls is not None:
            http["tls"] = tls
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if auth is not None:
            config["auth"] = auth
        path = self.directory / "config.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
        return path

    def _spawn(self, config: Path) -> None:
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")
        }  # env vars would override the config
        with self._log_file.open("ab") as sink:
            self._log_offset = sink.tell()
            self._process = subprocess.Popen(
                [self._binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

    def _wait_ready(self) -> None:
        assert self._process is not None
        verify: ssl.SSLContext | bool = False
        if self.ca_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + self._startup_timeout
        with httpx.Client(verify=verify, timeout=1.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RegistryStartError(
                        f"docker-registry on {self.host} exited with code "
                        f"{self._process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    http.get(f"{self.url}/v2/")
                    return
                except httpx.HTTPError:
                    time.sleep(0.02)
        raise RegistryStartError(
            f"docker-registry on {self.host} did not answer GET /v2/ within "
            f"{self._startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def _stop_token_server(self) -> None:
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    # -- access log -----------------------------------------------------------------------

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _log_text(self) -> str:
        try:
            with self._log_file.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request since start or :meth:`clear_requests`."""
        return parse_access_log(self._log_text())

    def clear_requests(self) -> None:
        """Forget the requests seen so far (remembers the log offset)."""
        try:
            self._log_offset = self._log_file.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0

    def count(self, method: str, path_substring: str) -> int:
        """How many ``method`` requests had ``path_substring`` in their path."""
        return sum(
            1 for m, path, _ in self.requests() if m == method.upper() and path_substring in path
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.registry_server",
        description="Run a local test registry in the foreground; prints its host:port.",
    )
    parser.add_argument("--dir", required=True, type=Path, help="storage and config directory")
    parser.add_argument("--port", type=int, default=None, help="fixed port (default: a free one)")
    parser.add_argument("--auth", choices=["none", "htpasswd", "token"], default="none")
    parser.add_argument("--tls", action="store_true", help="HTTPS with a self-signed CA")
    args = parser.parse_args(argv)
    server = RegistryServer(args.dir, auth=args.auth, tls=args.tls, port=args.port)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with server:
        print(server.host, flush=True)
        if server.ca_file:
            print(f"ca-file: {server.ca_file}", file=sys.stderr, flush=True)
        while not stopping and server.pid is not None:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
