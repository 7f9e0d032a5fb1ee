"""SIGTERM stops a CLI pull within seconds and packs what completed, as Ctrl+C does (issue 13):
a real child process, a slow source (a loopback proxy that trickles one package's blobs)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request, _forward, _read_request, _send
from reliability_support import kill_hard, start_cli, wait_for

from d8mirror.bundle import verify_sidecars
from testbed.registry_server import RegistryServer
from testbed.seed import ExtraSpec, PackageSpec, SeedSpec, seed_packages

ROOT = "signals/ee"
#: How long a stopped pull may take to exit (packing is done; it writes its report and ends).
EXIT_BOUND = 45.0


class TrickleProxy(FaultProxy):
    """Forwards everything; the blob GETs ``slow`` matches go out in small pieces with pauses
    (a slow source), counted in ``trickling`` while they last."""

    def __init__(self, upstream: str, slow: Callable[[Request], bool]) -> None:
        super().__init__(upstream)
        self.slow = slow
        self.trickling = 0
        self._count = threading.Lock()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            request = _read_request(conn)
            if request is None:
                return
            response = _forward(self.upstream, request)
            if not (self.slow(request) and response.status == 200 and response.body):
                _send(conn, response)
                return
            _send(conn, response, body_limit=0)  # head, then the body slowly
            with self._count:
                self.trickling += 1
            try:
                for start in range(0, len(response.body), 16 << 10):
                    conn.sendall(response.body[start : start + (16 << 10)])
                    time.sleep(0.05)  # about 320 KiB/s
            finally:
                with self._count:
                    self.trickling -= 1
        except (OSError, ValueError):
            pass  # the client went away: what a stopped pull does
        finally:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    small = SeedSpec(
        payload_size=32 << 10,
        packages=(PackageSpec("small", ("v1.0.0",), channels={"stable": "v1.0.0"}),),
    )
    # big's bytes are in its extra image: its main image is fetched (small) while the pull
    # sizes every package, the extra one while small is packed (tests/test_pull_sizing.py)
    big = SeedSpec(
        payload_size=32 << 10,
        extra_payload_size=24 << 20,
        shared_layer_fraction=0.0,
        seed=3,
        packages=(
            PackageSpec(
                "big",
                ("v2.0.0",),
                channels={"stable": "v2.0.0"},
                internal_images=0,
                extras=(ExtraSpec("huge", "v1.0.0"),),
            ),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("signals-source")) as server:
        images = tmp_path_factory.mktemp("signals-images")
        with server.client() as client:
            seed_packages(client, ROOT, small, images)
            seed_packages(client, ROOT, big, images)
        yield server


@pytest.mark.usefixtures("prefect_server")
def test_sigterm_stops_a_pull_within_seconds_and_packs_what_completed(
    source: RegistryServer, tmp_path: Path
) -> None:
    bundle, log = tmp_path / "bundle", tmp_path / "pull.log"
    with TrickleProxy(
        source.host,
        lambda r: r.method == "GET" and "/packages/big/extra/huge/blobs/sha256:" in r.path,
    ) as proxy:
        process = start_cli(
            [
                "pull",
                str(bundle),
                "--source",
                f"{proxy.host}/{ROOT}",
                "--insecure",
                "--concurrency",
                "2",
            ],
            log,
            D8MIRROR_WARM_UP="0",
        )
        try:
            wait_for(
                lambda: proxy.trickling >= 1 and (bundle / "package-small.tar.sha256").is_file(),
                timeout=300,
                what="small packed while big downloads",
                process=process,
                log=log,
            )
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=EXIT_BOUND)
            took = time.monotonic() - sent
        finally:
            kill_hard(process)
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert took < EXIT_BOUND
    assert "Operation cancelled by user" in output
    assert verify_sidecars(bundle) == []
    assert sorted(p.name for p in bundle.glob("*.tar")) == ["package-small.tar"]
    assert not [p for p in bundle.iterdir() if p.is_file() and p.name.endswith((".tmp", ".chunk"))]
    report = json.loads((bundle / "report.json").read_text())
    assert report["status"] == "cancelled"
    assert {p["name"]: p["status"] for p in report["packages"]} == {
        "big": "cancelled",
        "small": "pulled",
    }
