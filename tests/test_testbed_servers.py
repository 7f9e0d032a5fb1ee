"""The test bed's registries answer in every mode, and the access log counts requests."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import httpx
import pytest

from d8mirror.errors import UnauthorizedError
from d8mirror.mediatypes import OCI_CONFIG, OCI_MANIFEST
from d8mirror.registry import Credentials
from testbed.registry_server import RegistryServer, RegistryStartError, parse_access_log

MODES = ["registry", "registry2", "basic_registry", "tls_registry", "token_registry"]


def _push_tiny(server: RegistryServer, tmp_path: Path, repo: str, tag: str) -> str:
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    source = tmp_path / "config.json"
    source.write_bytes(config)
    manifest = (
        b'{"schemaVersion":2,"mediaType":"'
        + OCI_MANIFEST.encode()
        + b'","config":{"mediaType":"'
        + OCI_CONFIG.encode()
        + b'","digest":"'
        + digest.encode()
        + b'","size":'
        + str(len(config)).encode()
        + b'},"layers":[]}'
    )
    with server.client() as client:
        client.upload_blob(repo, digest, source)
        return client.put_manifest(repo, tag, manifest, OCI_MANIFEST)


@pytest.mark.parametrize("fixture_name", MODES)
def test_every_mode_round_trips_an_image(
    fixture_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: RegistryServer = request.getfixturevalue(fixture_name)
    digest = _push_tiny(server, tmp_path, f"bed/{fixture_name.replace('_', '-')}", "t1")
    with server.client() as client:
        assert client.get_manifest(f"bed/{fixture_name.replace('_', '-')}", "t1").digest == digest


@pytest.mark.parametrize("fixture_name", ["basic_registry", "tls_registry", "token_registry"])
def test_authenticated_modes_reject_wrong_password(
    fixture_name: str, request: pytest.FixtureRequest
) -> None:
    server: RegistryServer = request.getfixturevalue(fixture_name)
    assert server.username == "testuser" and server.password == "testpass"
    with (
        server.client(credentials=Credentials("testuser", "wrong")) as client,
        pytest.raises(UnauthorizedError),
    ):
        client.list_tags("bed/none")


def test_attributes_describe_the_mode(
    registry: RegistryServer, tls_registry: RegistryServer
) -> None:
    assert registry.url == f"http://{registry.host}" and registry.insecure
    assert registry.username is None and registry.password is None and registry.ca_file is None
    assert tls_registry.url.startswith("https://127.0.0.1:") and not tls_registry.insecure
    assert tls_registry.ca_file is not None and Path(tls_registry.ca_file).is_file()
    trust = ssl.create_default_context(cafile=tls_registry.ca_file)
    response = httpx.get(f"{tls_registry.url}/v2/", verify=trust)
    assert response.status_code == 401


def test_access_log_counts_requests(registry: RegistryServer, tmp_path: Path) -> None:
    registry.clear_requests()
    _push_tiny(registry, tmp_path, "bed/counted", "a")
    with registry.client() as client:
        client.get_manifest("bed/counted", "a")
        client.get_manifest("bed/counted", "a")
    assert registry.count("GET", "/v2/bed/counted/manifests/a") == 2
    assert registry.count("PUT", "/manifests/a") == 1
    assert ("PUT", "/v2/bed/counted/manifests/a", 201) in registry.requests()
    registry.clear_requests()
    assert registry.count("GET", "/manifests/") == 0


def test_parse_access_log_reads_combined_format() -> None:
    line = (
        '127.0.0.1 - - [28/Nov/2026:10:00:00 +0000] "GET /v2/x/blobs/sha256:ab HTTP/1.1" '
        '200 12 "" "d8mirror"\n'
    )
    assert parse_access_log(line) == [("GET", "/v2/x/blobs/sha256:ab", 200)]


def test_stop_leaves_nothing_running(tmp_path: Path) -> None:
    server = RegistryServer(tmp_path / "short-lived").start()
    pid = server.pid
    assert pid is not None
    server.stop()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/", timeout=1)


def test_start_failure_quotes_the_registry_log(tmp_path: Path) -> None:
    server = RegistryServer(tmp_path / "broken", binary="/bin/false", startup_timeout=2)
    with pytest.raises(RegistryStartError, match="exited with code 1"):
        server.start()


def test_foreground_cli_prints_host_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    with subprocess.Popen(  # leaving the block closes the stdout pipe
        [sys.executable, "-m", "testbed.registry_server", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            assert process.stdout is not None
            host = process.stdout.readline().strip()
            assert host.startswith("127.0.0.1:")
            assert httpx.get(f"http://{host}/v2/", timeout=5).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}/v2/", timeout=1)
