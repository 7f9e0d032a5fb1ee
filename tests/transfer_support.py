"""Helpers of the transfer tests (not a test module): a moto S3 server on 127.0.0.1, bundles
with real archives plus a large opaque one (to exercise multipart), and the per-file rows a
transfer flow run left in its table artifact."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from push_bundle_builder import PackageSpec, build_bundle

ACCESS_KEY = "AKIAD8MIRRORTEST"
SECRET_KEY = "sekret-d8mirror-s3"
PART = 5 * 1024 * 1024


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """A real HTTP S3 endpoint (moto) on 127.0.0.1; yields its URL. Every server of the process
    shares moto's in-memory backends, so each starts empty (reset): buckets and objects of an
    earlier test never show up in a later one."""
    import httpx
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    httpx.post(f"http://{host}:{port}/moto-api/reset", timeout=30).raise_for_status()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def write_sidecar(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def make_bundle(tmp: Path, *, big: int = 2 * PART + 123) -> Path:
    """Two real package archives, package-versions.tar, a large tar of random bytes (a bit over
    ``big`` bytes), report.json."""
    bundle, _ = build_bundle(tmp, [PackageSpec("alpha"), PackageSpec("beta")])
    big_file = bundle / "package-big.tar"
    with tarfile.open(big_file, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("packages/big/padding.bin")
        info.size = big
        tar.addfile(info, io.BytesIO(os.urandom(big)))
    write_sidecar(big_file)
    (bundle / "report.json").write_text('{"ok": true}\n')
    return bundle


def file_rows(state: Any) -> dict[str, dict[str, Any]]:
    """The per-file rows (name, size, status, time, rate, error) of a finished upload-bundle or
    download-bundle run, read back from its table artifact on the Prefect server."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    run_id = UUID(str(state.state_details.flow_run_id))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["bundle-upload-files", "bundle-download-files"])
            ),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        )
    assert len(artifacts) == 1, artifacts
    data: Any = artifacts[0].data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return {row["name"]: row for row in rows}


def statuses(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: row["status"] for name, row in rows.items()}
