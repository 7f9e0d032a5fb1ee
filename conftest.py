"""Root pytest configuration: Prefect isolation, set before anything imports Prefect.

Every session gets a fresh PREFECT_HOME and result storage, so cache records never leak from one
session into the next, and telemetry is off (tests talk to 127.0.0.1 only).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

_home = tempfile.mkdtemp(prefix="d8mirror-prefect-home-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(_home, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's own test harness (a temporary server with SQLite), started once."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
