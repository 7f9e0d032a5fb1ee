"""Operating d8mirror in Prefect on one host: ``python -m deployments.serve`` against a real
``prefect server``, runs triggered through the API, the UI's Retry on a failed package, the
``d8mirror.bundle.completed`` event and ``mirror-package`` into an existing bundle.

The source is a dedicated registry (fixed port, seeded with ``demo_spec``): the persistent fault
is one layer blob of package ``code`` hidden from its storage (404 BLOB_UNKNOWN, not retried),
with a registry restart so its in-memory descriptor cache forgets the blob.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import (
    ARTIFACTS,
    PrefectServer,
    Process,
    browse,
    bundle_archives,
    child_env,
    chromium,
    shared_server,
    use_server,
    wait_for_run,
)

from testbed.registry_server import RegistryServer, free_port
from testbed.seed import demo_spec, seed_packages

ROOT = "deckhouse/ee"
#: flow runs made by earlier tests of this module, reused by the UI smoke test
_runs: dict[str, Any] = {}
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json,"
    "application/vnd.oci.image.index.v1+json,"
    "application/vnd.docker.distribution.manifest.v2+json"
)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PrefectServer]:
    with use_server(shared_server(request.config)) as srv:
        yield srv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry of our own (restarted on the same port to inject the fault)."""
    directory = tmp_path_factory.mktemp("ops-source")
    registry = RegistryServer(directory, port=free_port()).start()
    try:
        with registry.client() as client:
            seed_packages(client, ROOT, demo_spec(), directory / "images")
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops-serve")


@pytest.fixture(scope="module")
def serve(server: PrefectServer, source: RegistryServer, work: Path) -> Iterator[Process]:
    env = child_env(
        server,
        D8MIRROR_BUNDLE_DIR=str(work / "default-bundle"),
        D8MIRROR_SOURCE=f"{source.host}/{ROOT}",
        D8MIRROR_PULL_PARAMS=json.dumps({"insecure": True}),
    )
    process = Process("serve", [sys.executable, "-m", "deployments.serve"], env, work)
    try:
        process.wait_for_text("Your deployments are being served", timeout=90)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def clean(serve: Process, source: RegistryServer, work: Path) -> Path:
    """A clean in-process pull of the source: the reference bundle of this module's tests."""
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = work / "clean"
    run_pull(PullParameters(**_params(source, bundle, tmp_dir=str(work / "clean-tmp"))))
    return bundle


def _deployments() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in found}


def _params(source: RegistryServer, bundle: Path, **extra: Any) -> dict[str, Any]:
    return {"bundle_dir": str(bundle), "source": f"{source.host}/{ROOT}", "insecure": True, **extra}


def _run(deployment: str, params: dict[str, Any]) -> Any:
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = run_deployment(name=deployment, parameters={"params": params}, timeout=0)
    assert isinstance(run, FlowRun)  # called from sync code: not a coroutine
    return wait_for_run(run.id)


def _artifact_rows(flow_run_id: Any, key: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert found, f"no {key} artifact for {flow_run_id}"
    data: Any = found[-1].data  # an artifact's data: JSON text or parsed JSON
    return list(json.loads(data) if isinstance(data, str) else data)


def _progress(flow_run_id: Any, key: str) -> float:
    """The value of the run's one progress artifact ``key`` (flows.progress)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        [found] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert found.type == "progress"
    return float(found.data)  # type: ignore[arg-type]


def _hide_blob(source: RegistryServer, package: str, version: str) -> Path:
    """Hide the package's own (last) layer; returns the hidden file to restore."""
    manifest = httpx.get(
        f"{source.url}/v2/{ROOT}/packages/{package}/manifests/{version}",
        headers={"Accept": MANIFEST_TYPES},
    ).json()
    digest: str = manifest["layers"][-1]["digest"].split(":")[1]
    data = source.root / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    source.stop()
    hidden = data.rename(data.with_name("data.hidden"))
    source.start()
    return hidden


def _restore_blob(source: RegistryServer, hidden: Path) -> None:
    source.stop()
    hidden.rename(hidden.with_name("data"))
    source.start()


def test_serve_registers_every_deployment_with_typed_parameters(serve: Process) -> None:
    deployments = _deployments()
    assert {
        "mirror-pull/mirror-packages",
        "mirror-package/mirror-package",
        "mirror-push/push-bundle",
        "upload-bundle/upload-bundle",
        "mirror-scaleout/mirror-scaleout",
        "mirror-pull/mirror-packages-delta",
        "import-bundle/import-bundle",
    } <= set(deployments)
    nightly = deployments["mirror-pull/mirror-packages"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options.collision_strategy == "CANCEL_NEW"
    schema = nightly.parameter_openapi_schema["definitions"]["PullParameters"]["properties"]
    assert "Packages pulled at the same time" in schema["concurrency"]["description"]
    single = deployments["mirror-package/mirror-package"].parameter_openapi_schema
    assert "NAME[@CONSTRAINT]" in json.dumps(single["definitions"])
    imports = deployments["import-bundle/import-bundle"]
    assert imports.schedules == []  # D8MIRROR_IMPORT_CRON unset: run by hand or automation
    fields = imports.parameter_openapi_schema["definitions"]["ImportParameters"]["properties"]
    assert {"source", "registry", "receipt", "receipt_upload_to", "source_access"} <= set(fields)
    delta = deployments["mirror-pull/mirror-packages-delta"].parameters["params"]
    assert delta["upload"]["url"].endswith("/{bundle_id}") and delta["delta_from"]


def _fetch_states(
    flow_run_id: Any, attempt: int, names: set[str], timeout: float = 60
) -> dict[str, str | None]:
    """fetch-<package> task run name -> final state name, in attempt ``attempt`` of a flow run
    (the server records task runs from events, a moment after the run ends: wait for all)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            states = {
                r.name: r.state.name
                for r in runs
                if r.name in names
                and r.flow_run_run_count == attempt
                and r.state is not None
                and r.state.is_final()
            }
            if set(states) == names or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def test_ui_retry_refetches_only_the_failed_package(
    serve: Process, source: RegistryServer, work: Path, clean: Path
) -> None:
    """A persistent fault fails one package; after the fix, the UI's Retry on the same flow
    run runs only that package's fetch (the others come back Cached from the content cache,
    their archives kept), fetches only its manifests and blobs, and the bundle equals a clean
    run's."""
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    bundle = work / "bundle"
    hidden = _hide_blob(source, "code", "v1.7.0")
    try:
        failed = _run("mirror-pull/mirror-packages", _params(source, bundle))
    finally:
        _restore_blob(source, hidden)
    assert failed.state.is_failed()
    assert "failed packages: code" in failed.state.message
    rows = {r["package"]: r for r in _artifact_rows(failed.id, "mirror-pull-packages")}
    assert rows["code"]["status"] == "failed" and "BLOB_UNKNOWN" in rows["code"]["error"]
    assert {rows["console"]["status"], rows["stronghold"]["status"]} == {"pulled"}
    assert _progress(failed.id, "pull-progress") < 100  # a failed run keeps its last value
    packed = {p.name: p.stat().st_mtime_ns for p in bundle.glob("package-*.tar")}
    assert {"package-console.tar", "package-stronghold.tar"} <= set(packed)

    source.clear_requests()
    with get_client(sync_client=True) as client:  # exactly what the UI's Retry button sends
        client.set_flow_run_state(failed.id, AwaitingRetry(message="Retry from the UI"), force=True)
    retried = wait_for_run(failed.id)
    assert retried.state.is_completed(), retried.state.message
    _runs["retried"] = retried
    assert retried.run_count == 2
    assert _progress(failed.id, "pull-progress") == 100  # the same artifact, now whole
    fetches = {"fetch-code", "fetch-console", "fetch-stronghold"}
    assert _fetch_states(failed.id, 2, fetches) == {
        "fetch-code": "Completed",
        "fetch-console": "Cached",
        "fetch-stronghold": "Cached",
    }
    for name in ("package-console.tar", "package-stronghold.tar"):  # kept, not re-packed
        assert (bundle / name).stat().st_mtime_ns == packed[name], name
    requests = source.requests()
    blob_gets = [path for method, path, _ in requests if method == "GET" and "/blobs/" in path]
    assert blob_gets, "the failed package fetched nothing"
    assert all(f"/{ROOT}/packages/code/" in p for p in blob_gets), blob_gets
    assert any(hidden.parent.name in p for p in blob_gets)
    # the blob store outlives the retry, so blobs alone prove little: no manifest body and no
    # tag list of the other packages' repositories was read either (resolving their tags
    # with HEAD is the plan's work, and it runs again)
    manifest_gets = [p for m, p, _ in requests if m == "GET" and "/manifests/" in p]
    # (none at all, often: the first run's sizing put every planned manifest in the store)
    assert all(f"/{ROOT}/packages/code/" in p for p in manifest_gets), manifest_gets
    for other in ("console", "stronghold"):
        assert not [
            p
            for m, p, _ in requests
            if p.startswith(f"/v2/{ROOT}/packages/{other}/") and m == "GET" and "/version/" not in p
        ], other
    assert bundle_archives(bundle) == bundle_archives(clean)

    event = _bundle_event(str(bundle.resolve()))
    assert event["payload"]["packages"] == ["code", "console", "stronghold"]
    assert event["payload"]["bytes"] == sum(p.stat().st_size for p in bundle.glob("*.tar"))
    assert any(
        r["prefect.resource.id"] == f"prefect.flow-run.{failed.id}" for r in event["related"]
    )


def _bundle_event(bundle: str, timeout: float = 30) -> dict[str, Any]:
    """The d8mirror.bundle.completed event of ``bundle``, read back from the server."""
    from prefect.settings import PREFECT_API_URL

    body = {
        "filter": {
            "event": {"name": ["d8mirror.bundle.completed"]},
            "resource": {"id": [f"d8mirror.bundle.{bundle}"]},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()
        if found["events"]:
            return dict(found["events"][0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no d8mirror.bundle.completed event for {bundle}")
        time.sleep(0.5)


def test_mirror_package_refetches_one_package_into_an_existing_bundle(
    serve: Process, source: RegistryServer, work: Path, clean: Path
) -> None:
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = work / "package-bundle"  # its own bundle: no other test's leftovers
    run_pull(PullParameters(**_params(source, bundle)))
    before = bundle_archives(bundle)
    assert before == bundle_archives(clean)
    others = {
        p.name: p.stat().st_mtime_ns
        for p in bundle.glob("*.tar")
        if p.name != "package-console.tar"
    }
    (bundle / "package-console.tar").unlink()

    source.clear_requests()
    run = _run(
        "mirror-package/mirror-package",
        _params(source, bundle, package="console", force_refetch=True),
    )
    assert run.state.is_completed(), run.state.message
    assert bundle_archives(bundle) == before
    assert {
        p.name: p.stat().st_mtime_ns
        for p in bundle.glob("*.tar")
        if p.name != "package-console.tar"
    } == others
    touched = [p for _, p, _ in source.requests() if p.startswith(f"/v2/{ROOT}/")]
    assert touched and all(p.startswith(f"/v2/{ROOT}/packages/console") for p in touched), touched
    [row] = _artifact_rows(run.id, "mirror-package")
    assert row["package"] == "console" and row["status"] == "pulled"
    assert _progress(run.id, "pull-progress") == 100  # a deployment run has it too


@pytest.mark.skipif(chromium() is None, reason="needs Debian chromium")
def test_ui_renders_deployment_form_and_run_artifact(
    serve: Process, server: PrefectServer, source: RegistryServer, work: Path
) -> None:
    """Headless Chromium against the server's UI: the mirror-packages deployment page, its run
    form with the field descriptions, and the report artifact of a run started via the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    nightly = _deployments()["mirror-pull/mirror-packages"]
    page = browse(
        f"{server.url}/deployments/deployment/{nightly.id}", ARTIFACTS / "ui-deployment.png"
    )
    assert "mirror-packages" in page and "At 02:00 AM every day" in page
    form = browse(
        f"{server.url}/deployments/deployment/{nightly.id}/run", ARTIFACTS / "ui-run-form.png"
    )
    for text in (
        "Pull Deckhouse packages from a source registry into a bundle directory.",
        "Packages pulled at the same time.",
        "Whitelist NAME[@CONSTRAINT]",
        "receives package-NAME.tar",
    ):
        assert text in form

    run = _runs.get("retried") or _run(
        "mirror-pull/mirror-packages",
        _params(source, work / "ui-bundle", include_packages=["code"]),
    )
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mirror-pull-packages"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    shown = browse(
        f"{server.url}/artifacts/artifact/{artifact.id}", ARTIFACTS / "ui-run-artifact.png"
    )
    assert "mirror-pull-packages" in shown and run.name in shown
    assert "code" in shown and "pulled" in shown
