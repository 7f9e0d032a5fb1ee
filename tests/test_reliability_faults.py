"""Faults between d8mirror and a real registry (tests/faultproxy.py): under ~10 % faulted
responses a pull gives a byte-identical bundle and a push an identical target registry; a blob
that stays corrupted never reaches the blob store or a bundle, and the error names it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Request
from push_stages import push_bundle

from d8mirror.blobstore import BlobStore
from d8mirror.bundle import discover_archives
from d8mirror.errors import DigestMismatchError
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.push.routing import Router, parse_target
from d8mirror.registry import RegistryClient, TLSOptions
from d8mirror.retry import RetryPolicy, default_policy
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

ROOT = "deckhouse/ee"
FAULT_RATE = 0.1
#: A package fetch meets a blob twice: the prefetch warm-up of its wave, then the ordered pass.
PASSES_PER_FETCH = 2
pytestmark = pytest.mark.usefixtures("prefect_server")
_ns = itertools.count()


@pytest.fixture
def proxy(registry: RegistryServer, demo_content: SeededContent) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host, rate=0.0, seed=20261128) as running:
        yield running


def _params(host: str, bundle: Path, **extra: Any) -> Any:
    from tasks.models import PullParameters

    return PullParameters(bundle_dir=str(bundle), source=f"{host}/{ROOT}", insecure=True, **extra)


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    """Every archive and sidecar (report.json holds timings, so it is left out)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != "report.json"
    }


def test_pull_under_faults_gives_a_byte_identical_bundle(proxy: FaultProxy, tmp_path: Path) -> None:
    from flows.pull import run_pull

    clean = run_pull(_params(proxy.host, tmp_path / "clean"))
    assert clean.status == "completed"
    assert proxy.faults == []
    requests_clean = len(proxy.seen)

    proxy.rate = FAULT_RATE
    faulty = run_pull(_params(proxy.host, tmp_path / "faulty"))
    assert faulty.status == "completed", faulty.model_dump_json(indent=1)
    kinds = proxy.fault_kinds()
    assert sum(kinds.values()) >= 10, kinds
    assert {"flip", "reset", "truncate", "length", "429"} & set(kinds), kinds
    assert _bundle_files(tmp_path / "faulty") == _bundle_files(tmp_path / "clean")
    assert faulty.warnings == clean.warnings
    assert requests_clean > 100  # the faults were spread over a real amount of traffic


def _tags_and_digests(server: RegistryServer, root: str) -> dict[str, str]:
    """``repo:tag`` -> digest for every repository under ``root`` (catalog + tag lists)."""
    found: dict[str, str] = {}
    with server.client() as client:
        for repo in client.list_repositories():
            if not repo.startswith(root + "/") and repo != root:
                continue
            for tag in client.list_tags(repo):
                found[f"{repo[len(root) :]}:{tag}"] = client.head_manifest(repo, tag).digest
    return found


def test_push_under_faults_leaves_the_target_identical(
    registry: RegistryServer, registry2: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """Core push (no Prefect retries) through the proxy: same repositories, tags, digests."""
    from flows.pull import run_pull

    bundle = tmp_path / "bundle"
    # the bundle comes from the clean source; only the push goes through faults
    run_pull(_params(registry.host, bundle, include_packages=["console", "stronghold"]))
    archives = discover_archives(bundle)
    n = next(_ns)
    clean_root, faulty_root = f"clean-{n}/ee", f"faulty-{n}/ee"
    with registry2.client() as client:
        result = push_bundle(
            client,
            archives,
            tmp_path / "t1",
            parse_target(f"{registry2.host}/{clean_root}"),
            Router.from_suffixes(),
        )
    assert result.ok
    with (
        FaultProxy(registry2.host, rate=FAULT_RATE, seed=7) as proxy,
        RegistryClient(proxy.host, tls=TLSOptions(insecure=True)) as client,
    ):
        result = push_bundle(
            client,
            archives,
            tmp_path / "t2",
            parse_target(f"{proxy.host}/{faulty_root}"),
            Router.from_suffixes(),
            concurrency=2,
            blob_workers=2,
        )
        kinds = proxy.fault_kinds()
    assert result.ok, [f.error for f in result.failures]
    assert sum(kinds.values()) >= 5, kinds
    clean = _tags_and_digests(registry2, clean_root)
    assert clean and _tags_and_digests(registry2, faulty_root) == clean


def test_a_blob_corrupted_on_every_try_never_lands_and_the_error_names_it(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    repo = f"{ROOT}/packages/console"
    with registry.client() as client:
        layer = str(client.get_manifest(repo, "v1.2.0").json()["layers"][-1]["digest"])

    def is_that_blob(request: Request) -> bool:
        return request.path.endswith(layer)

    slept: list[float] = []
    with (
        FaultProxy(registry.host, rate=1.0, kinds=("flip",), match=is_that_blob) as proxy,
        RegistryClient(proxy.host, tls=TLSOptions(insecure=True)) as client,
    ):
        store = BlobStore(tmp_path / "store")
        fetcher = ImageFetcher(client, store, retry=RetryPolicy(attempts=3, sleep=slept.append))
        digest = fetcher.resolve(repo, "v1.2.0")
        assert digest is not None
        with pytest.raises(DigestMismatchError) as caught:
            fetcher.image(repo, digest)
        assert proxy.count("GET", layer) == 3
    message = str(caught.value)
    assert repo in message and layer in message and "gave up after 3 attempts" in message
    assert len(slept) == 2
    assert not store.has(layer)
    leftovers = [
        p for p in (tmp_path / "store").rglob("*") if p.is_file() and layer.split(":")[1] in p.name
    ]
    assert leftovers == []


def test_a_pull_whose_blob_stays_corrupted_fails_that_package_only(
    registry: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the flow: no package-console.tar (nor a partial one), the others are written,
    and the failure names the repository and the digest."""
    from flows.pull import PullFailed, run_pull
    from tasks.policy import TRANSIENT_RETRIES

    repo = f"{ROOT}/packages/console"
    with registry.client() as client:
        layer = str(client.get_manifest(repo, "v1.2.0").json()["layers"][-1]["digest"])
    bundle = tmp_path / "bundle"
    monkeypatch.setenv("D8_MIRROR_RETRY_BASE_DELAY", "0.01")  # the core's tries, quickly
    monkeypatch.setenv("D8_MIRROR_RETRY_ATTEMPTS", "3")  # not the default: it is obeyed
    policy = default_policy()
    assert policy.attempts is not None
    task_tries = 1 + TRANSIENT_RETRIES["retries"]
    with (
        FaultProxy(
            registry.host, rate=1.0, kinds=("flip",), match=lambda r: r.path.endswith(layer)
        ) as proxy,
        pytest.raises(PullFailed, match="console"),
    ):
        run_pull(_params(proxy.host, bundle, include_packages=["console", "code"]))
    assert (bundle / "package-code.tar").is_file()
    assert not list(bundle.glob("package-console.tar*"))
    assert not any(
        p.name.endswith(".partial") or ".tmp" in p.name for p in bundle.iterdir() if p.is_file()
    )
    report = json.loads((bundle / "report.json").read_text())
    console = next(p for p in report["packages"] if p["name"] == "console")
    assert console["status"] == "failed"
    assert repo in console["error"] and layer in console["error"]
    assert f"gave up after {policy.attempts} attempts" in console["error"]
    assert "while fetching image" in console["error"]
    # Each give-up costs exactly policy.attempts GETs; per try of the fetch task the blob is
    # given up twice: by the wave's prefetch (a warmer) and by the ordered pass after it; and
    # once before them by the pull's sizing, which fetches the main images (tolerating it).
    assert proxy.count("GET", layer) == policy.attempts * (PASSES_PER_FETCH * task_tries + 1)
    store = BlobStore(bundle / ".tmp" / "blobs")
    assert not store.has(layer)
