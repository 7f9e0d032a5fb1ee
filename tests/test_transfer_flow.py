"""upload-bundle / download-bundle flows under Prefect's test harness, against moto on
127.0.0.1 and the real registry. S3 keys live in a Secret block; they must never show up in
parameters, logs, artifacts, results or events."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from transfer_support import ACCESS_KEY, SECRET_KEY, make_bundle, moto_endpoint

from d8mirror.transfer import MANIFEST_NAME, IncompleteUploadError
from d8mirror.verify import verify_bundle
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")
BLOCK = "d8mirror-test-s3"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(endpoint: str, prefect_server: None) -> str:
    import boto3
    from prefect.blocks.system import Secret

    Secret(
        value=json.dumps({"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY})
    ).save(BLOCK, overwrite=True)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket="airgap")
    return "airgap"


@pytest.fixture(autouse=True)
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def _run_id(state: Any) -> UUID:
    return UUID(str(state.state_details.flow_run_id))


def _everything_prefect_kept(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    texts = [json.dumps(run.parameters, default=str), str(run.state)]
    texts += [log.message for log in logs]
    texts += [json.dumps(a.data, default=str) + str(a.description) for a in artifacts]
    storage = Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    if storage.is_dir():
        texts += [p.read_text(errors="replace") for p in storage.rglob("*") if p.is_file()]
    return "\n".join(texts)


def _events(name: str, url: str) -> list[dict[str, Any]]:
    """Events ``name`` whose payload names ``url`` (other tests emit the same event)."""
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}}, "limit": 50}
    for _ in range(40):
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()
        mine = [e for e in found.get("events") or [] if e["payload"].get("url") == url]
        if mine:
            return mine
        time.sleep(0.25)
    return []


def test_s3_flows_round_trip_without_leaking_credentials(
    endpoint: str, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from flows.transfer import UPLOADED_EVENT, download_bundle, upload_bundle
    from tasks.transfer_models import DownloadParameters, UploadParameters

    bundle = make_bundle(tmp_path / "src")
    common = {
        "url": f"s3://{bucket}/flow",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "credentials_block": BLOCK,
        "part_size_mib": 5,
    }
    up = upload_bundle(UploadParameters(bundle_dir=str(bundle), **common), return_state=True)
    assert up.is_completed(), up
    summary = up.result()
    assert summary.statuses == {"uploaded": summary.files}

    down = download_bundle(
        DownloadParameters(dest_dir=str(tmp_path / "dst"), **common), return_state=True
    )
    assert down.is_completed(), down
    assert (tmp_path / "dst" / MANIFEST_NAME).is_file()
    for path in bundle.iterdir():
        if path.is_file():
            assert (tmp_path / "dst" / path.name).read_bytes() == path.read_bytes()
    report = verify_bundle(tmp_path / "dst")
    assert report.ok, report.verdict()

    events = _events(UPLOADED_EVENT, f"s3://{bucket}/flow")
    assert events
    kept = _everything_prefect_kept(_run_id(up)) + _everything_prefect_kept(_run_id(down))
    kept += json.dumps(events) + "".join(capfd.readouterr())
    assert "upload-file" in kept or "package-big.tar" in kept  # we did read real records
    assert SECRET_KEY not in kept
    assert ACCESS_KEY not in kept


def test_download_of_incomplete_upload_fails_before_any_file(
    endpoint: str, bucket: str, tmp_path: Path
) -> None:
    from flows.transfer import download_bundle
    from tasks.transfer_models import DownloadParameters

    params = DownloadParameters(
        url=f"s3://{bucket}/never-finished",
        endpoint_url=endpoint,
        region="us-east-1",
        credentials_block=BLOCK,
        dest_dir=str(tmp_path / "dst"),
    )
    state = download_bundle(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(IncompleteUploadError):
        state.result()
    assert not (tmp_path / "dst").exists()


def test_oci_flows_round_trip(registry: RegistryServer, tmp_path: Path) -> None:
    from flows.transfer import download_bundle, upload_bundle
    from tasks.transfer_models import DownloadParameters, UploadParameters

    bundle = make_bundle(tmp_path / "src", big=1 << 20)
    common = {"url": f"oci://{registry.host}/airgap/flow:v1", "insecure": True}
    up = upload_bundle(UploadParameters(bundle_dir=str(bundle), **common))
    assert up.digest is not None and up.digest.startswith("sha256:")
    download_bundle(DownloadParameters(dest_dir=str(tmp_path / "dst"), **common))
    assert verify_bundle(tmp_path / "dst").ok


def test_deployments_pass_the_file_bound_through() -> None:
    """serve.py and prefect.yaml deploy the flow object itself, and a deployment run calls it
    with the run's parameters: ``file_concurrency`` reaches ``submit_bounded`` unchanged (it
    was capped at 2 by the flow's own task runner before). That the flow keeps exactly that
    many files in flight is tested in test_transfer_oci (the flow called as a deployment
    calls it)."""
    from deployments.serve import build_deployments
    from flows.transfer import upload_bundle
    from tasks.transfer_models import UploadParameters

    [upload] = [d for d in build_deployments({}) if d.name == "upload-bundle"]
    assert upload.flow_name == upload_bundle.name
    assert "file_concurrency" not in upload.parameters["params"]  # the model's default
    chosen = UploadParameters.model_validate(
        {**upload.parameters["params"], "file_concurrency": 16}
    )
    assert chosen.file_concurrency == 16
    yaml = (Path(__file__).parents[1] / "deployments" / "prefect.yaml").read_text()
    assert "entrypoint: flows/transfer.py:upload_bundle" in yaml


def test_files_cross_the_task_boundary_as_validated_models(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from d8mirror.transfer import build_manifest
    from tasks.transfer_models import TransferFile, TransferFiles

    manifest = build_manifest(make_bundle(tmp_path, big=1000))
    passed = TransferFiles.model_validate_json(TransferFiles.of(manifest).model_dump_json())
    assert passed.manifest() == manifest
    assert passed.manifest().to_bytes() == manifest.to_bytes()
    good = TransferFiles.of(manifest).files[0].model_dump()
    for bad in ({"sha256": "f" * 63}, {"sha256": "F" * 64}, {"size": -1}, {"gost": "xyz"}):
        with pytest.raises(ValidationError):
            TransferFile.model_validate({**good, **bad})
