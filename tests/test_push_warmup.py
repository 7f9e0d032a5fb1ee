"""The push warm-up: a bundle's blobs put into the target ahead of the push (the CLI does it
while its local Prefect API server starts), never a tag; the push then uploads nothing again and
finds them present (the warm-up reports them itself); a corrupt bundle gets nothing put."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import PackageSpec, build_bundle

from d8mirror.bundle import SPAN_THRESHOLD, discover_archives
from d8mirror.bundle.checksums import sha256_line
from d8mirror.errors import NotFoundError
from d8mirror.hashing import sha256_file_hex
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.summary import PushResult
from d8mirror.push.warmup import PushWarmer
from d8mirror.registry import RegistryClient, TLSOptions
from tasks import runtime

REPO = Path(__file__).resolve().parent.parent
_ns = itertools.count()
SPECS = [PackageSpec("console", layer_size=SPAN_THRESHOLD + (1 << 20)), PackageSpec("code")]


def _target(server: Any, name: str) -> str:
    return f"{server.host}/{name}-{next(_ns)}/ee"


def _warm(server: Any, bundle: Path, target: str) -> int:
    with RegistryClient(server.host, tls=TLSOptions(insecure=True)) as client:
        warmer = PushWarmer(
            client,
            discover_archives(bundle),
            parse_target(target),
            Router.from_suffixes("/packages", "/modules"),
            bundle / ".tmp" / "mirror" / "warmup",
            locations=runtime.blob_locations(server.host),
            concurrency=2,
        )
        put = warmer.start().join(timeout=120)
        warmer.close()
    assert not (bundle / ".tmp").exists()  # what the warm-up created is gone
    return put


def _puts(result: PushResult) -> tuple[int, int]:
    """(blobs the push put itself, blobs it found present)."""
    return (
        sum(r.blobs_uploaded + r.blobs_mounted for r in result.layouts),
        sum(r.blobs_present for r in result.layouts),
    )


def test_push_after_warm_up_uploads_nothing_again_and_finds_the_blobs_present(
    prefect_server: None, registry2: Any, tmp_path: Path
) -> None:
    from flows.push import run_push
    from tasks.push_models import PushParameters

    bundle, _ = build_bundle(tmp_path, SPECS)
    cold = run_push(
        PushParameters(bundle_dir=str(bundle), registry=_target(registry2, "cold"), insecure=True)
    )
    target = _target(registry2, "warm")
    root = parse_target(target).path
    registry2.clear_requests()
    put = _warm(registry2, bundle, target)
    assert put > 0
    assert registry2.count("PUT", "/manifests/") == 0  # blobs only: no tag appeared
    with (
        RegistryClient(registry2.host, tls=TLSOptions(insecure=True)) as client,
        pytest.raises(NotFoundError),
    ):
        client.head_manifest(f"{root}/packages/console", "v1.0.0")
    registry2.clear_requests()
    warm = run_push(PushParameters(bundle_dir=str(bundle), registry=target, insecure=True))
    assert warm.ok
    uploads = [
        path
        for method, path, _ in registry2.requests()
        if method == "POST"
        and path.startswith(f"/v2/{root}/packages/")
        and "/blobs/uploads" in path
        and not path.startswith(f"/v2/{root}/packages/blobs/")
    ]  # discovery tags' own
    assert uploads == []  # nothing uploaded again
    # each blob the warm-up put (uploaded, or mounted from where this process pushed it
    # before) is reported by the warm-up; the push found every one of them present
    assert _puts(warm) == (0, _puts(cold)[0]) == (0, put)


def test_corrupt_bundle_gets_nothing_put(registry2: Any, tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, SPECS)
    archive = bundle / "package-code.tar"
    sidecar = archive.with_name(archive.name + ".sha256")
    sidecar.write_text(sha256_line(sha256_file_hex(archive), archive.name))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    registry2.clear_requests()
    assert _warm(registry2, bundle, _target(registry2, "corrupt")) == 0
    assert registry2.requests() == []


def test_cli_push_warms_up_while_its_prefect_server_starts(registry2: Any, tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path, SPECS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "push",
            str(bundle),
            _target(registry2, "cli"),
            "--insecure",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "blobs were pushed while the local Prefect API server started" in done.stderr
    assert not (bundle / ".tmp").exists()  # the push's and the warm-up's trees are gone


def test_a_warm_up_that_cannot_read_the_bundle_ends_quietly(
    registry2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from d8mirror.push import warmup

    uncaught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))

    def unreadable(path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(warmup, "is_plain_tar", unreadable)
    bundle, _ = build_bundle(tmp_path, SPECS)
    registry2.clear_requests()
    assert _warm(registry2, bundle, _target(registry2, "unreadable")) == 0
    assert uncaught == [] and registry2.requests() == []
