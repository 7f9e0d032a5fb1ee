"""The pull warm-up: main images fetched into the blob store ahead of the pull (the CLI does it
while its local Prefect API server starts), through the pull's own stages; the pull then
downloads each blob once and reports what the warm-up fetched as reused; a stopped warm-up
starts nothing."""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pull_stages import Stages

from d8mirror.blobstore import BlobStore
from d8mirror.pull.discovery import discover_packages
from d8mirror.pull.fetcher import FetchStats, ImageFetcher
from d8mirror.pull.options import PullOptions
from d8mirror.pull.warmup import StoreWarmer, can_warm
from d8mirror.registry import RegistryClient, TLSOptions
from tasks.models import PullParameters
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

DEMO_ROOT = "deckhouse/ee"
REPO = Path(__file__).resolve().parent.parent


def _options(registry: RegistryServer, **extra: object) -> PullOptions:
    return PullParameters(
        bundle_dir="unused", source=f"{registry.host}/{DEMO_ROOT}", insecure=True, **extra
    ).options()


def _client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.host, tls=TLSOptions(insecure=True))


def _pull_all(
    client: RegistryClient, store: BlobStore, options: PullOptions, names: list[str], work: Path
) -> FetchStats:
    """Each package pulled by its own fetcher (as the flow's tasks do); stats summed."""
    total = FetchStats()
    for name in names:
        fetcher = ImageFetcher(client, store)
        Stages(fetcher, options).pull(name, work / name)
        total.blobs_fetched += fetcher.stats.blobs_fetched
        total.bytes_fetched += fetcher.stats.bytes_fetched
        total.blobs_reused += fetcher.stats.blobs_reused
    return total


def _blob_gets(registry: RegistryServer) -> int:
    return sum(
        1 for method, path, _ in registry.requests() if method == "GET" and "/blobs/" in path
    )


def test_pull_after_warm_up_downloads_less_and_reports_it_as_reused(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    options = _options(registry)
    with _client(registry) as client:
        names = discover_packages(client, options).names
        assert len(names) > 1
        registry.clear_requests()
        cold = _pull_all(
            client, BlobStore(tmp_path / "cold-store"), options, names, tmp_path / "cold"
        )
        cold_gets = _blob_gets(registry)

        store = BlobStore(tmp_path / "warm-store")
        warmer = StoreWarmer(client, store, options, concurrency=2, blob_workers=2).start()
        totals = warmer.join(timeout=120)
        assert totals.blobs > 0 and totals.bytes > 0
        registry.clear_requests()
        warm = _pull_all(client, store, options, names, tmp_path / "warm")
        warm_gets = _blob_gets(registry)

    # what the warm-up fetched is not fetched again: the pull finds it in the store
    assert warm_gets == cold_gets - totals.blobs
    assert (warm.blobs_fetched, warm.bytes_fetched) == (
        cold.blobs_fetched - totals.blobs,
        cold.bytes_fetched - totals.bytes,
    )
    assert warm.blobs_reused == cold.blobs_reused + totals.blobs
    for package in names:  # the layouts are the same
        assert (tmp_path / "warm" / package / "index.json").read_bytes() == (
            tmp_path / "cold" / package / "index.json"
        ).read_bytes()


def test_stopped_warm_up_starts_nothing(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    with _client(registry) as client:
        store = BlobStore(tmp_path / "store")
        warmer = StoreWarmer(client, store, _options(registry))
        warmer.stop()
        assert warmer.start().join(timeout=60).blobs == 0
    assert list((tmp_path / "store" / "sha256").iterdir()) == []


def test_only_plain_pulls_are_warmed(registry: RegistryServer) -> None:
    assert can_warm(_options(registry))
    assert not can_warm(_options(registry, dry_run=True))
    assert not can_warm(_options(registry, only_extra_images=True))
    assert not can_warm(_options(registry, no_packages=True))


def test_cli_pull_warms_up_while_its_prefect_server_starts_and_fetches_each_blob_once(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    bundle = tmp_path / "bundle"
    registry.clear_requests()
    # the kept store inside the new bundle dir (issue 13: the warm-up creates it first)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "pull",
            str(bundle),
            "--source",
            f"{registry.host}/{DEMO_ROOT}",
            "--insecure",
            "--tmp-dir",
            str(bundle / "work"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "fetched while the local Prefect API server started (the pull reports them as "
        "reused)" in done.stderr
    )
    gets = collections.Counter(
        path.rsplit("/", 1)[1]
        for method, path, _ in registry.requests()
        if method == "GET" and "/blobs/" in path
    )
    assert gets and max(gets.values()) == 1, gets.most_common(3)
    report = json.loads((bundle / "report.json").read_text())
    store = bundle / "work" / "blobs" / "sha256"
    fetched = sum(p["bytes_fetched"] for p in report["packages"])
    assert 0 <= fetched < sum(b.stat().st_size for b in store.iterdir())


def test_warm_up_asks_a_failing_registry_once_and_gives_up(tmp_path: Path) -> None:
    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        stop = threading.Event()

        def hang_up() -> None:  # accept and close at once: a transient network error
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(1)
                connection.close()

        server = threading.Thread(target=hang_up)
        server.start()
        try:
            options = PullParameters(
                bundle_dir="unused", source=f"{host}/{DEMO_ROOT}", insecure=True
            ).options()
            with RegistryClient(host, tls=TLSOptions(insecure=True)) as client:
                warmer = StoreWarmer(client, BlobStore(tmp_path / "store"), options)
                assert warmer.start().join(timeout=60).blobs == 0
        finally:
            stop.set()
            server.join()
    # one ask: --insecure probes HTTPS and plain HTTP once each (the pull itself would retry
    # for its whole budget)
    assert len(accepted) == 2


def test_a_warm_up_that_cannot_write_ends_quietly(
    registry: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unwritable store is the pull's to report: the warm-up thread ends without a
    traceback on the CLI's output."""
    from d8mirror.pull import warmup

    uncaught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "store" / "incoming"))

    store = BlobStore(tmp_path / "store")
    monkeypatch.setattr(store, "commit", refuse)  # while fetching
    with _client(registry) as client:
        assert StoreWarmer(client, store, _options(registry)).start().join(60).blobs == 0
        monkeypatch.setattr(warmup, "discover_packages", refuse)  # before anything
        assert StoreWarmer(client, store, _options(registry)).start().join(60).blobs == 0
    assert uncaught == []
