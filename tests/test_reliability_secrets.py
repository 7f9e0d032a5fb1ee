"""Credentials never leak: pull, push and upload through the CLI with distinctive credentials
(and with a wrong password), then scan every log line, captured output, Prefect flow-run
parameters and states, task-run states, logs, artifacts, result/cache files and the Prefect
database itself."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.main import main
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

USER = "d8-secret-user"
PASSWORD = "S3cr3t-d8mirror-XYZ"
WRONG = "S3cr3t-d8mirror-WRONG"
SECRETS = (
    USER,
    PASSWORD,
    WRONG,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    base64.b64encode(f"{USER}:{WRONG}".encode()).decode(),
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def secret_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    spec = SeedSpec(
        payload_size=32 << 10,
        packages=(
            PackageSpec("vault", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=1),
        ),
    )
    with RegistryServer(
        tmp_path_factory.mktemp("secret-registry"), auth="htpasswd", users={USER: PASSWORD}
    ) as server:
        with server.client() as client:
            seed_packages(client, "src/ee", spec, tmp_path_factory.mktemp("secret-images"))
        yield server


def _prefect_records() -> str:
    """Everything the Prefect API keeps: runs (parameters, states), task runs, logs, artifacts;
    plus result/cache files and the raw database file."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    texts: list[str] = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(limit=200):
            texts.append(json.dumps(run.parameters, default=str))
            texts.append(f"{run.name} {run.state!r} {run.state.message if run.state else ''}")
        for task_run in client.read_task_runs(limit=200):
            state = task_run.state
            texts.append(f"{task_run.name} {state!r} {state.message if state else ''}")
            texts.append(json.dumps(task_run.task_inputs, default=str))
        texts += [log.message for log in client.read_logs(limit=200)]
        texts += [
            json.dumps(a.data, default=str) + str(a.description)
            for a in client.read_artifacts(limit=200)
        ]
    storage = Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    if storage.is_dir():
        texts += [p.read_text(errors="replace") for p in storage.rglob("*") if p.is_file()]
    database = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    path = Path(database.split("///", 1)[-1]) if "sqlite" in database else None
    assert path is not None and path.is_file(), f"no Prefect database at {database!r}"
    for db_file in path.parent.glob(path.name + "*"):  # the db, its -wal and -shm
        texts.append(db_file.read_bytes().decode("latin-1"))
    return "\n".join(texts)


def test_no_credential_in_logs_output_prefect_records_or_errors(
    secret_registry: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for var in (
        "D8_MIRROR_SOURCE_LOGIN",
        "D8_MIRROR_SOURCE_PASSWORD",
        "D8_MIRROR_LICENSE_TOKEN",
        "D8_MIRROR_REGISTRY_LOGIN",
        "D8_MIRROR_REGISTRY_PASSWORD",
    ):
        monkeypatch.setenv(var, "")  # the CLI writes some of them; restored at teardown
    host = secret_registry.host
    bundle = tmp_path / "bundle"
    pull = ["pull", str(bundle), "--source", f"{host}/src/ee", "--insecure", "--source-login", USER]
    assert main([*pull, "--source-password", PASSWORD]) == 0
    assert (bundle / "package-vault.tar").is_file()
    assert (
        main(["push", str(bundle), f"{host}/dst/ee", "--insecure", "-u", USER, "-p", PASSWORD]) == 0
    )
    monkeypatch.setenv("D8_MIRROR_REGISTRY_LOGIN", USER)
    monkeypatch.setenv("D8_MIRROR_REGISTRY_PASSWORD", PASSWORD)
    assert main(["upload", str(bundle), f"oci://{host}/transfer/bundle:v1", "--insecure"]) == 0
    succeeded = capfd.readouterr()
    assert f"file(s) to oci://{host}/transfer/bundle:v1: " in succeeded.out

    # the same with a wrong password: failures, whose texts are scanned too
    assert (
        main(["pull", str(tmp_path / "denied"), *pull[2:], "--source-password", WRONG, "--force"])
        == 1
    )
    assert (
        main(["push", str(bundle), f"{host}/dst2/ee", "--insecure", "-u", USER, "-p", WRONG]) != 0
    )
    out, err = capfd.readouterr()
    assert "authentication failed" in (out + err + caplog.text).lower()

    kept = "\n".join([succeeded.out, succeeded.err, out, err, caplog.text, _prefect_records()])
    for path in tmp_path.rglob("*.json"):  # report.json and friends
        kept += path.read_text(errors="replace")
    assert "mirror-pull" in kept and "push" in kept  # real records were read
    leaks = [s for s in SECRETS if s in kept]
    assert leaks == [], "credential found in logs, output or Prefect records"
