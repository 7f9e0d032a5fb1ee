"""import-bundle end to end: a real pull of the demo content uploaded to moto S3 under its id,
imported into the real registry through S3 with the receipt uploaded back; a second run skips
it without writing to the target; the event d8mirror.bundle.imported names it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from push_bundle_builder import PackageSpec, build_bundle
from transfer_support import ACCESS_KEY, SECRET_KEY, moto_endpoint

from d8mirror.receipt import parse_receipt, read_receipt
from d8mirror.sealed import check_sealed
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")
BLOCK = "d8mirror-import-s3"
BUCKET = "airgap"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(scope="module")
def s3(endpoint: str, prefect_server: None) -> Any:
    import boto3
    from prefect.blocks.system import Secret

    Secret(
        value=json.dumps({"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY})
    ).save(BLOCK, overwrite=True)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(autouse=True)
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def _access(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "region": "us-east-1", "credentials_block": BLOCK}


def _imported_events(bundle_id: str) -> list[dict[str, Any]]:
    from prefect.settings import PREFECT_API_URL

    from flows.importing import IMPORTED_EVENT

    body = {"filter": {"event": {"name": [IMPORTED_EVENT]}}, "limit": 50}
    for _ in range(40):
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()
        mine = [e for e in found.get("events") or [] if e["payload"]["bundle_id"] == bundle_id]
        if mine:
            return mine
        time.sleep(0.25)
    return []


def _names(repository: str, relative: str) -> bool:
    """Whether the receipt's ``relative`` (to the packages root, ``packages/<name>…``) names
    ``repository`` of the target ``import-s3/ee``."""
    return repository in (f"import-s3/ee/{relative}", f"import-s3/ee/packages/{relative}")


def _writes(registry: RegistryServer) -> list[tuple[str, str, int]]:
    return [r for r in registry.requests() if r[0] in ("PUT", "POST", "PATCH", "DELETE")]


def test_import_from_s3_pushes_writes_and_uploads_the_receipt_then_skips(
    registry: RegistryServer,
    registry2: RegistryServer,
    demo_content: SeededContent,
    endpoint: str,
    s3: Any,
    tmp_path: Path,
) -> None:
    from d8mirror.delta import bundle_id
    from flows.importing import import_bundle
    from flows.pull import mirror_pull
    from tasks.import_models import ImportParameters
    from tasks.models import PullParameters

    # outside: pull, then upload under the bundle's id (as the nightly deployment does)
    bundle = tmp_path / "bundle"
    mirror_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/deckhouse/ee",
            insecure=True,
            include_packages=["code"],
            upload={"url": f"s3://{BUCKET}/nightly/{{bundle_id}}", **_access(endpoint)},
        )
    )
    identity = bundle_id(bundle)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"nightly/{identity}/")
    assert any(o["Key"].endswith("d8mirror-transfer.json") for o in listed["Contents"])

    # inside: import every pending upload under the prefix
    site = tmp_path / "site"
    target = f"{registry2.host}/import-s3/ee"
    params = ImportParameters(
        source=f"s3://{BUCKET}/nightly",
        registry=target,
        insecure=True,
        receipt=str(site / "receipt.json"),
        receipt_upload_to=f"s3://{BUCKET}/site/receipt.json",
        source_access=_access(endpoint),
    )
    registry2.clear_requests()
    first = import_bundle(params)
    assert [(b.name, b.status, b.bundle_id) for b in first.bundles] == [
        (identity, "imported", identity)
    ]
    assert first.bundles[0].layouts > 0 and first.bundles[0].tags > 0
    assert registry2.count("PUT", "/v2/import-s3/ee/packages/code/manifests/") > 0
    assert not (site / "incoming" / identity).exists()  # the download is removed once imported

    receipt, _ = read_receipt(site / "receipt.json")
    assert receipt.bundles == {identity}
    assert any(i.repository.endswith("code") for i in receipt.images)
    with registry2.client() as client:
        held = [r for r in client.list_repositories() if r.startswith("import-s3/ee/")]
        for image in receipt.images:  # the repository in the target that the receipt names
            [repository] = [r for r in held if _names(r, image.repository)]
            assert client.head_manifest(repository, image.tag).digest == image.digest

    # the receipt went back out, whole: its sidecar matches
    data = s3.get_object(Bucket=BUCKET, Key="site/receipt.json")["Body"].read()
    sidecar = s3.get_object(Bucket=BUCKET, Key="site/receipt.json.sha256")["Body"].read()
    check_sealed(data, sidecar.decode(), where="s3 receipt")
    assert data == (site / "receipt.json").read_bytes()
    assert parse_receipt(data).bundles == {identity}
    assert first.receipt_uploaded_to == f"s3://{BUCKET}/site/receipt.json"

    [event] = _imported_events(identity)
    assert event["payload"]["registry"] == target
    assert event["payload"]["tags"] == first.bundles[0].tags
    assert event["resource"]["prefect.resource.id"] == f"d8mirror.bundle.{identity}"

    # again: skipped by its name in the receipt; nothing written to the target
    registry2.clear_requests()
    again = import_bundle(params)
    assert [(b.status, b.bundle_id) for b in again.bundles] == [("skipped", identity)]
    assert _writes(registry2) == []

    # the upload itself as the source: downloaded, its id computed, skipped
    single = import_bundle(
        params.model_copy(update={"source": f"s3://{BUCKET}/nightly/{identity}"})
    )
    assert [(b.status, b.bundle_id) for b in single.bundles] == [("skipped", identity)]
    assert not (site / "incoming" / identity).exists()  # downloaded, then dropped
    assert _writes(registry2) == []
    assert len(_imported_events(identity)) == 1  # no event for a skipped bundle


def test_import_of_a_directory_applies_pending_bundles_in_order_and_stops_at_a_failure(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from d8mirror.delta import bundle_id
    from flows.importing import ImportFailed, import_bundle
    from tasks.import_models import ImportParameters

    source = tmp_path / "uploads"
    a, _ = build_bundle(tmp_path / "a", [PackageSpec("alpha")])
    b, _ = build_bundle(tmp_path / "b", [PackageSpec("bravo")])
    c, _ = build_bundle(tmp_path / "c", [PackageSpec("charlie")])
    source.mkdir()
    for name, bundle in (("2026-01-01", a), ("2026-01-02", b), ("2026-01-03", c)):
        bundle.rename(source / name)
    broken = source / "2026-01-02" / "package-bravo.tar"
    broken.write_bytes(broken.read_bytes()[:-1024])  # its sidecar no longer matches
    (source / "2026-01-04-partial").mkdir()  # not a bundle: ignored
    receipt = tmp_path / "site" / "receipt.json"
    params = ImportParameters(
        source=str(source),
        registry=f"{registry2.host}/import-dir/ee",
        insecure=True,
        receipt=str(receipt),
    )
    with pytest.raises(ImportFailed, match="2026-01-02"):
        import_bundle(params)
    held, _ = read_receipt(receipt)
    assert held.bundles == {bundle_id(source / "2026-01-01")}  # the first one only
    assert not any("charlie" in i.repository for i in held.images)

    state = import_bundle(params, return_state=True)  # the first is skipped, b fails again
    assert state.is_failed()
    rows = _table(state, "import-bundles")
    assert [(r["upload"], r["status"]) for r in rows] == [
        ("2026-01-01", "skipped"),
        ("2026-01-02", "failed"),
        ("2026-01-03", "not started"),
    ]


def _table(state: Any, key: str) -> list[dict[str, Any]]:
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
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        )
    data: Any = artifact.data
    return json.loads(data) if isinstance(data, str) else list(data)


def test_cli_import_runs_the_flow_in_process_and_is_idempotent(
    registry2: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.main import main
    from d8mirror.delta import bundle_id

    bundle, _ = build_bundle(tmp_path, [PackageSpec("delta-cli")])
    receipt = tmp_path / "site" / "receipt.json"
    argv = [
        "import",
        str(bundle),
        f"{registry2.host}/import-cli/ee",
        "--receipt",
        str(receipt),
        "--insecure",
        "--progress",
        "none",
    ]
    assert main(argv) == 0
    assert "1 imported" in capsys.readouterr().out
    held, _ = read_receipt(receipt)
    assert held.bundles == {bundle_id(bundle)}
    registry2.clear_requests()
    assert main(argv) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert _writes(registry2) == []


def test_cli_import_refuses_bad_usage_before_prefect(tmp_path: Path) -> None:
    from app.commands.importing import parameters
    from app.main import build_parser
    from d8mirror.errors import ConfigError, InvalidReferenceError

    for argv in (
        ["import", str(tmp_path), "no-path-registry", "--receipt", "r.json"],
        ["import", "s3://A", "host:5000/x", "--receipt", "r.json"],
        [
            "import",
            str(tmp_path),
            "host:5000/x",
            "--receipt",
            "r",
            "--receipt-upload-to",
            "ftp://x",
        ],
    ):
        args = build_parser().parse_args(argv)
        with pytest.raises((ConfigError, InvalidReferenceError)):
            parameters(args)


def _site_receipt(path: Path) -> Path:
    from d8mirror.receipt import HeldImage, Receipt, write_receipt

    image = HeldImage("packages/console", "v1.0.0", "sha256:" + "ab" * 32)
    write_receipt(Receipt.build("registry.local/ee", [image], bundles=["delta-x"]), path)
    return path


def test_send_receipt_to_oci_and_to_an_s3_prefix_reads_back_whole(
    registry2: RegistryServer, endpoint: str, s3: Any, tmp_path: Path
) -> None:
    from flows.transfer import download_bundle
    from tasks.receipts import send_receipt
    from tasks.transfer_models import DownloadParameters, TransferAccess

    receipt = _site_receipt(tmp_path / "receipt.json")
    url = f"oci://{registry2.host}/site/receipt:latest"
    assert send_receipt(receipt, url, TransferAccess(insecure=True)) == url
    download_bundle(DownloadParameters(url=url, dest_dir=str(tmp_path / "back"), insecure=True))
    assert read_receipt(tmp_path / "back" / "receipt.json")[0].bundles == {"delta-x"}

    access = TransferAccess(**_access(endpoint))
    assert send_receipt(receipt, f"s3://{BUCKET}/out", access) == f"s3://{BUCKET}/out/receipt.json"
    data = s3.get_object(Bucket=BUCKET, Key="out/receipt.json")["Body"].read()
    sidecar = s3.get_object(Bucket=BUCKET, Key="out/receipt.json.sha256")["Body"].read()
    assert data == receipt.read_bytes()
    check_sealed(data, sidecar.decode(), where="out/receipt.json")


def test_a_tampered_receipt_is_refused_before_anything_is_pushed(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from d8mirror.errors import SealedFileError
    from flows.importing import import_bundle
    from tasks.import_models import ImportParameters

    bundle, _ = build_bundle(tmp_path, [PackageSpec("tampered")])
    receipt = _site_receipt(tmp_path / "site" / "receipt.json")
    receipt.write_bytes(receipt.read_bytes().replace(b"delta-x", b"delta-y"))
    registry2.clear_requests()
    params = ImportParameters(
        source=str(bundle),
        registry=f"{registry2.host}/tampered/ee",
        insecure=True,
        receipt=str(receipt),
    )
    with pytest.raises(SealedFileError, match="does not match its checksum file"):
        import_bundle(params)
    assert registry2.requests() == []


def test_an_incomplete_upload_is_left_for_a_later_run(
    registry2: RegistryServer, endpoint: str, s3: Any, tmp_path: Path
) -> None:
    from d8mirror.delta import bundle_id
    from flows.importing import import_bundle
    from flows.transfer import upload_bundle
    from tasks.import_models import ImportParameters
    from tasks.transfer_models import UploadParameters

    bundle, _ = build_bundle(tmp_path, [PackageSpec("later")])
    upload_bundle(
        UploadParameters(
            bundle_dir=str(bundle), url=f"s3://{BUCKET}/queue/{{bundle_id}}", **_access(endpoint)
        )
    )
    s3.put_object(Bucket=BUCKET, Key="queue/zz-uploading/package-x.tar", Body=b"partial")
    params = ImportParameters(
        source=f"s3://{BUCKET}/queue",
        registry=f"{registry2.host}/queue/ee",
        insecure=True,
        receipt=str(tmp_path / "site" / "receipt.json"),
        source_access=_access(endpoint),
    )
    result = import_bundle(params)
    assert [(b.name, b.status) for b in result.bundles] == [
        (bundle_id(bundle), "imported"),
        ("zz-uploading", "incomplete"),
    ]
    assert result.receipt_uploaded_to is None


def test_deployments_of_the_loop_hold_valid_parameters_and_schedules_from_the_environment() -> None:
    import yaml

    from deployments.serve import build_deployments
    from tasks.import_models import ImportParameters
    from tasks.models import PullParameters

    text = (Path(__file__).parents[1] / "deployments" / "prefect.yaml").read_text()
    found = {d["name"]: d for d in yaml.safe_load(text)["deployments"]}
    hourly = ImportParameters.model_validate(found["import-bundle"]["parameters"]["params"])
    delta = PullParameters.model_validate(found["mirror-packages-delta"]["parameters"]["params"])
    assert found["import-bundle"]["entrypoint"] == "flows/importing.py:import_bundle"
    assert delta.upload is not None and delta.upload.url.endswith("/{bundle_id}")
    assert delta.delta_from == hourly.receipt_upload_to
    assert hourly.source == delta.upload.url.removesuffix("/{bundle_id}")  # the loop closes

    served = {d.name: d for d in build_deployments({})}
    assert served["import-bundle"].schedules == served["mirror-packages-delta"].schedules == []
    env = {"D8MIRROR_IMPORT_CRON": "15 * * * *", "D8MIRROR_DELTA_CRON": "0 3 * * *"}
    served = {d.name: d for d in build_deployments(env)}
    assert [s.schedule.cron for s in served["import-bundle"].schedules] == ["15 * * * *"]
    assert [s.schedule.cron for s in served["mirror-packages-delta"].schedules] == ["0 3 * * *"]
    ImportParameters.model_validate(served["import-bundle"].parameters["params"])
