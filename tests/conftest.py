"""Shared pytest fixtures: real registries on 127.0.0.1, started once per session.

Prefect isolation comes first, before anything can import Prefect: telemetry off, a fresh
PREFECT_HOME per session, no PREFECT_API_URL inherited from the shell.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="d8mirror-test-prefect-home-")
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(
    os.environ["PREFECT_HOME"], "storage"
)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# The core retries a failing request for 90 s by default (d8's patience); tests that expect a
# failure should not wait that long. Tests of the default patience clear this themselves.
os.environ.setdefault("D8_MIRROR_RETRY_BUDGET", "15s")

from collections.abc import Iterator

import pytest
from closing import closing_registry_clients

from testbed.registry_server import AuthMode, RegistryServer
from testbed.seed import SeededContent, demo_spec, seed_packages


@pytest.fixture(autouse=True)
def _close_registry_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registry clients a test opened and left open are closed when it ends (tests/closing.py),
    so an unclosed socket never turns into a ResourceWarning in a later test."""
    with closing_registry_clients(monkeypatch):
        yield


def _serve(
    factory: pytest.TempPathFactory, name: str, *, auth: AuthMode = "none", tls: bool = False
) -> Iterator[RegistryServer]:
    with RegistryServer(factory.mktemp(name), auth=auth, tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain HTTP, anonymous: the usual source registry."""
    yield from _serve(tmp_path_factory, "registry")


@pytest.fixture(scope="session")
def registry2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A second plain HTTP anonymous registry: the usual push target."""
    yield from _serve(tmp_path_factory, "registry2")


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """htpasswd (testuser/testpass) over plain HTTP."""
    yield from _serve(tmp_path_factory, "basic-registry", auth="htpasswd")


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """htpasswd (testuser/testpass) over HTTPS with a self-signed CA (``.ca_file``)."""
    yield from _serve(tmp_path_factory, "tls-registry", auth="htpasswd", tls=True)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Bearer tokens from a local token server (testuser/testpass) over plain HTTP."""
    yield from _serve(tmp_path_factory, "token-registry", auth="token")


DEMO_ROOT = "deckhouse/ee"


@pytest.fixture(scope="session")
def demo_content(
    registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
) -> SeededContent:
    """``demo_spec()`` seeded once into ``registry`` under ``deckhouse/ee`` (treat as read-only)."""
    with registry.client() as client:
        return seed_packages(client, DEMO_ROOT, demo_spec(), tmp_path_factory.mktemp("demo-images"))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's own test harness (a temporary server with SQLite), started once."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
