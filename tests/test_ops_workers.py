"""Operating d8mirror on a work pool: ``d8mirror setup`` (registry concurrency limits, a pool),
``prefect deploy`` of deployments/prefect.yaml, tasks holding registry slots, and the
scale-out parent fanning packages out to two real ``prefect worker`` processes."""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import (
    BIN,
    PROJECT,
    PrefectServer,
    Process,
    bundle_archives,
    child_env,
    shared_server,
    use_server,
)

from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

POOL = "d8mirror"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PrefectServer]:
    with use_server(shared_server(request.config)) as srv:
        yield srv


def _setup(*argv: str) -> int:
    from app.main import build_parser

    args = build_parser().parse_args(["setup", *argv])
    return int(args.run(args))


def _limit(name: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


@pytest.fixture(scope="module")
def deployed(server: PrefectServer, registry: RegistryServer) -> dict[str, Any]:
    """`d8mirror setup` then `prefect deploy --all` from the project root, as documented."""
    assert (
        _setup("--registry", f"{registry.host}/deckhouse/ee", "--limit", "2", "--work-pool", POOL)
        == 0
    )
    done = subprocess.run(
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "deploy",
            "--prefect-file",
            "deployments/prefect.yaml",
            "--all",
        ],
        cwd=PROJECT,
        env=child_env(server),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        return {
            f"{flows[d.flow_id]}/{d.name}": d
            for d in client.read_deployments()
            if d.work_pool_name == POOL
        }


def test_setup_creates_limits_and_is_idempotent(
    deployed: dict[str, Any], registry: RegistryServer
) -> None:
    from tasks.concurrency import limit_name

    name = limit_name(registry.host)
    assert name == "d8mirror-registry-" + registry.host.replace(":", "-")
    assert _limit(name).limit == 2
    assert _setup("--registry", registry.host, "--limit", "3") == 0
    assert _limit(name).limit == 3
    assert _setup("--registry", registry.host, "--limit", "2") == 0


def test_prefect_deploy_creates_pool_deployments(deployed: dict[str, Any]) -> None:
    assert set(deployed) == {
        "mirror-pull/mirror-packages",
        "mirror-package/mirror-package",
        "mirror-scaleout/mirror-scaleout",
        "mirror-push/push-bundle",
        "upload-bundle/upload-bundle",
        "mirror-pull/mirror-packages-delta",
        "import-bundle/import-bundle",
    }
    nightly = deployed["mirror-pull/mirror-packages"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert nightly.enforce_parameter_schema
    # the loop across the air gap: examples the operator turns on (one at a time each)
    delta, hourly = (
        deployed["mirror-pull/mirror-packages-delta"],
        deployed["import-bundle/import-bundle"],
    )
    assert [s.schedule.cron for s in delta.schedules] == ["0 2 * * *"]
    assert [s.schedule.cron for s in hourly.schedules] == ["15 * * * *"]
    assert not any(s.active for s in [*delta.schedules, *hourly.schedules])
    assert delta.parameters["params"]["upload"]["url"].endswith("/{bundle_id}")
    assert (
        delta.parameters["params"]["delta_from"] == hourly.parameters["params"]["receipt_upload_to"]
    )
    assert hourly.global_concurrency_limit.limit == 1 and hourly.enforce_parameter_schema
    for deployment in deployed.values():  # no pull section: deploy records the project root
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}
        ]
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger

    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name("upload-bundle__automation_1")
    [chain] = automations
    assert not chain.enabled
    trigger, action = chain.trigger, chain.actions[0]
    assert isinstance(trigger, EventTrigger) and isinstance(action, RunDeployment)
    assert trigger.expect == {"d8mirror.bundle.completed"}
    assert action.deployment_id == deployed["upload-bundle/upload-bundle"].id


def test_registry_slots_bound_concurrent_holders(server: PrefectServer) -> None:
    from tasks.concurrency import ConcurrencyLimitMissing, limit_name, registry_slots

    assert _setup("--registry", "slots.test:5000", "--limit", "2") == 0
    holding, peak, lock, release = 0, 0, threading.Lock(), threading.Event()

    def hold() -> None:
        nonlocal holding, peak
        with registry_slots("slots.test:5000/x", 1, enabled=True):
            with lock:
                holding += 1
                peak = max(peak, holding)
            release.wait(120)  # holders keep their slot until the test lets them go
            with lock:
                holding -= 1

    # Threads see this module's server settings only through a copy of the context.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(hold,)) for _ in range(4)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while holding < 2 and time.monotonic() < deadline:  # two holders fill the limit...
            time.sleep(0.05)
        time.sleep(2)  # ...and the other two stay out while they hold
        assert (holding, peak) == (2, 2)
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert peak == 2 and holding == 0
    assert _limit(limit_name("slots.test:5000")).active_slots == 0
    with registry_slots("slots.test:5000", 8, enabled=True):  # occupy clamped to the limit
        assert _limit(limit_name("slots.test:5000")).active_slots == 2
    with (
        pytest.raises(ConcurrencyLimitMissing, match="d8mirror setup"),
        registry_slots("missing.test", 1, enabled=True),
    ):
        pass
    with registry_slots("missing.test", 1, enabled=False):  # off: no server round trip
        pass


def _acquired(limit_id: Any, timeout: float = 20) -> list[dict[str, Any]]:
    from prefect.settings import PREFECT_API_URL

    body = {
        "filter": {
            "event": {"name": ["prefect.concurrency-limit.acquired"]},
            "resource": {"id": [f"prefect.concurrency-limit.{limit_id}"]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    while True:
        events = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()
        if events["events"] or time.monotonic() > deadline:
            return list(events["events"])
        time.sleep(0.5)


@pytest.fixture(scope="module")
def workers(
    server: PrefectServer, deployed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Process]]:
    logs = tmp_path_factory.mktemp("workers")
    started = [
        Process(
            name,
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--name",
                name,
                "--limit",
                "1",
            ],
            child_env(server),
            logs,
        )
        for name in ("worker-a", "worker-b")
    ]
    try:
        for worker in started:
            worker.wait_for_text("started!", timeout=90)
        yield started
    finally:
        for worker in started:
            worker.stop()


def test_scaleout_on_two_workers_equals_a_single_process_pull(
    server: PrefectServer,
    registry: RegistryServer,
    demo_content: SeededContent,
    workers: list[Process],
    tmp_path: Path,
) -> None:
    """Children land on both workers; the bundle equals one process's, byte for byte. The
    single-process reference also holds the registry's slots (concurrency_limits on).

    Both runs read the source through a proxy (the source host is part of the archives). In
    the scale-out, every blob GET is held until both workers have taken a child: each worker
    runs one flow at a time (``--limit 1``), so the spread is forced, not left to poll timing.
    """
    from faultproxy import FaultProxy, Request

    from flows.pull import run_pull
    from flows.scaleout import mirror_scaleout
    from tasks.concurrency import limit_name
    from tasks.models import PullParameters, ScaleOutParameters

    holding_children = threading.Event()

    def child_blob(request: Request) -> bool:
        return (
            holding_children.is_set()
            and request.method == "GET"
            and "/blobs/sha256:" in request.path
        )

    submitted = re.compile(r"submitting flow run '([0-9a-f-]{36})'")

    def taken() -> dict[str, set[str]]:
        return {w.name: set(submitted.findall(w.text())) for w in workers}

    with FaultProxy(registry.host, hold=child_blob, hold_timeout=300) as proxy:
        assert _setup("--registry", f"{proxy.host}/deckhouse/ee", "--limit", "2") == 0
        common = {"source": f"{proxy.host}/deckhouse/ee", "insecure": True, "blob_workers": 3}
        single = tmp_path / "single"
        run_pull(PullParameters(bundle_dir=str(single), concurrency_limits=True, **common))
        limit = _limit(limit_name(proxy.host))
        acquired = _acquired(limit.id)
        assert acquired and {e["resource"]["slots-acquired"] for e in acquired} <= {"1", "2"}
        assert limit.active_slots == 0

        shared = tmp_path / "shared"
        outcome: dict[str, Any] = {}

        def scaleout() -> None:
            try:
                outcome["report"] = mirror_scaleout(
                    ScaleOutParameters(bundle_dir=str(shared), concurrency=3, **common)
                )
            except BaseException as exc:  # handed over to the test thread
                outcome["error"] = exc

        before = taken()
        holding_children.set()
        parent = threading.Thread(target=contextvars.copy_context().run, args=(scaleout,))
        parent.start()
        try:
            deadline = time.monotonic() + 300
            while (
                not all(taken()[name] - before[name] for name in before)
                and parent.is_alive()
                and time.monotonic() < deadline
            ):
                time.sleep(0.5)
            ran = {name: ids - before[name] for name, ids in taken().items()}
        finally:
            holding_children.clear()
            proxy.release()
            parent.join(600)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert all(ran.values()), ran  # both workers took a child while the children waited
    assert [p.status for p in report.packages] == ["pulled"] * 3
    assert bundle_archives(shared) == bundle_archives(single)
    saved = json.loads((shared / "report.json").read_text())
    assert saved["status"] == "completed"
    print(f"children per worker: { {k: len(v) for k, v in taken().items()} }", file=sys.stderr)


def test_delta_scaleout_equals_a_single_process_delta_pull(
    registry: RegistryServer,
    demo_content: SeededContent,
    workers: list[Process],
    tmp_path: Path,
) -> None:
    """A scale-out delta pull: the children get the parent's verified receipt, the parent
    writes delta.json once; the bundle equals one process's delta pull of the same receipt."""
    from delta_support import receipt_of_bundle

    from d8mirror.delta import DELTA_FILE, read_delta
    from d8mirror.receipt import write_receipt
    from flows.pull import run_pull
    from flows.scaleout import mirror_scaleout
    from tasks.models import PullParameters, ScaleOutParameters

    common: dict[str, Any] = {"source": f"{registry.host}/deckhouse/ee", "insecure": True}
    full = tmp_path / "full"
    run_pull(PullParameters(bundle_dir=str(full), **common))
    held = sorted(p.name for p in full.glob("package-*.tar"))[:1]  # the site holds one package
    receipt = tmp_path / "site" / "receipt.json"
    write_receipt(receipt_of_bundle(full, tmp_path / "layouts", held), receipt)
    common["delta_from"] = str(receipt)

    single = tmp_path / "single"
    run_pull(PullParameters(bundle_dir=str(single), **common))
    shared = tmp_path / "shared"
    report = mirror_scaleout(ScaleOutParameters(bundle_dir=str(shared), concurrency=3, **common))

    assert [p.status for p in report.packages] == ["pulled"] * 3
    assert report.delta is not None and report.delta.blobs_omitted > 0
    one, many = read_delta(single), read_delta(shared)
    assert one is not None and many is not None and many.omitted == one.omitted
    without_delta = {n: b for n, b in bundle_archives(shared).items() if DELTA_FILE not in n}
    assert without_delta == {
        n: b for n, b in bundle_archives(single).items() if DELTA_FILE not in n
    }
    assert bundle_archives(single) != bundle_archives(full)
