"""The final table artifacts as a person reads them in the Prefect UI (issue 16): sizes human
beside exact bytes, per-package (per-layout, per-file) durations, blobs fetched apart from
reused (uploaded apart from present), read back from Prefect's API after real runs against
the test registries; report.json only gains fields."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from push_bundle_builder import PackageSpec, build_bundle
from transfer_support import make_bundle

from d8mirror.units import human_size, human_size_exact
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")
#: ``0.4s``, ``12.3s``, ``5m40s``
DURATION = re.compile(r"^(\d+\.\ds|\d+m\d\ds|\d+h\d\dm)$")


def _table(state: Any, key: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    run = UUID(str(state.state_details.flow_run_id))
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run])),
        )
    assert artifact.type == "table"
    data: Any = artifact.data
    return list(json.loads(data) if isinstance(data, str) else data)


def _exact(text: str) -> int:
    """The exact byte count of ``1.1 MiB (1153433)`` (or ``512 B``), checked against its
    human part."""
    match = re.fullmatch(r"(?P<human>\d+(\.\d)? [KMGT]?i?B)( \((?P<exact>\d+)\))?", text)
    assert match, text
    size = int(match["exact"] or match["human"].split()[0])
    assert human_size(size) == match["human"]
    return size


def test_units_show_human_beside_exact() -> None:
    from d8mirror.units import human_seconds

    assert human_size_exact(1153433) == "1.1 MiB (1153433)"
    assert human_size_exact(512) == "512 B"
    assert [human_seconds(s) for s in (0.04, 12.34, 59.97, 340)] == [
        "0.0s",
        "12.3s",
        "1m00s",
        "5m40s",
    ]


def test_pull_table_shows_sizes_durations_and_blobs_fetched_then_reused(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    from flows.pull import mirror_package, mirror_pull
    from tasks.models import MirrorPackageParameters, PullParameters

    bundle, cache = tmp_path / "bundle", str(tmp_path / "cache")
    common = {"source": f"{registry.host}/deckhouse/ee", "insecure": True, "tmp_dir": cache}
    params = PullParameters(bundle_dir=str(bundle), include_packages=["console"], **common)
    state = mirror_pull(params, return_state=True)
    assert state.is_completed(), state
    [row] = _table(state, "mirror-pull-packages")
    saved = json.loads((bundle / "report.json").read_text())
    [package] = saved["packages"]
    assert row["package"] == package["name"] == "console"
    assert list(row)[:3] == ["package", "status", "time"]  # what matters, before any scrolling
    assert _exact(row["archive"]) == (bundle / "package-console.tar").stat().st_size
    assert _exact(row["downloaded"]) == package["bytes_fetched"] > 0
    assert row["blobs fetched"] == package["blobs_fetched"] > 0
    assert row["blobs reused"] == package["blobs_reused"]
    assert DURATION.match(row["time"]), row
    elapsed = saved["elapsed_seconds"]
    assert 0 < package["seconds"] <= elapsed
    # report.json only gained fields: every field it had before is still there
    assert {"name", "status", "versions", "images", "vex", "bytes_fetched", "archive"} <= set(
        package
    )
    assert {"archive_bytes", "error", "warnings"} <= set(package)

    again = mirror_package(
        MirrorPackageParameters(
            bundle_dir=str(bundle), package="console", force_refetch=True, **common
        ),
        return_state=True,
    )
    assert again.is_completed(), again
    [row] = _table(again, "mirror-package")
    assert row["blobs fetched"] == 0 and row["downloaded"] == "0 B"
    assert row["blobs reused"] == package["blobs_fetched"] + package["blobs_reused"]
    assert DURATION.match(row["time"]), row


def test_push_table_shows_uploaded_apart_from_present_with_sizes_and_durations(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import mirror_push
    from tasks.push import PushParameters

    bundle, _ = build_bundle(tmp_path, [PackageSpec("meter")])
    target = f"{registry2.host}/tables-{uuid4().hex[:8]}/ee"
    params = PushParameters(bundle_dir=str(bundle), registry=target, insecure=True)
    first = mirror_push(params, return_state=True)
    assert first.is_completed(), first
    result = first.result()
    rows = {r["layout"]: r for r in _table(first, "push-layouts")}
    assert set(rows) == {r.layout or "/" for r in result.layouts}
    for layout in result.layouts:
        row = rows[layout.layout or "/"]
        assert row["status"] == "pushed"
        assert list(row)[:3] == ["layout", "status", "time"]
        assert row["blobs uploaded"] == layout.blobs_uploaded
        assert row["blobs present"] == layout.blobs_present
        assert row["blobs mounted"] == layout.blobs_mounted
        assert _exact(row["uploaded"]) == layout.bytes_uploaded
        assert DURATION.match(row["time"]), row
        assert layout.seconds is not None and 0 <= layout.seconds <= result.elapsed_seconds
    assert sum(r["blobs uploaded"] for r in rows.values()) > 0

    second = mirror_push(params, return_state=True)  # everything is there now
    assert second.is_completed(), second
    rows = {r["layout"]: r for r in _table(second, "push-layouts")}
    assert all(r["blobs uploaded"] == 0 and r["uploaded"] == "0 B" for r in rows.values())
    assert sum(r["blobs present"] for r in rows.values()) > 0


def test_transfer_table_and_summary_show_sizes_beside_bytes(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.transfer import upload_bundle
    from tasks.transfer_models import UploadParameters

    bundle = make_bundle(tmp_path / "src", big=3 << 20)
    url = f"oci://{registry.host}/airgap/tables-{uuid4().hex[:8]}:v1"
    state = upload_bundle(
        UploadParameters(bundle_dir=str(bundle), url=url, insecure=True), return_state=True
    )
    assert state.is_completed(), state
    rows = {r["name"]: r for r in _table(state, "bundle-upload-files")}
    for path in bundle.iterdir():
        row = rows[path.name]
        assert _exact(row["size"]) == path.stat().st_size
        assert row["status"] == "uploaded"
        assert DURATION.match(row["time"]), row
    assert rows["package-big.tar"]["size"].startswith("3.0 MiB (")
    assert rows["package-big.tar"]["rate"].endswith("/s")

    summary = state.result()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["bundle-upload-summary"])),
            flow_run_filter=None,
        )
    text = next(str(a.data) for a in found if url in str(a.data))
    assert f"* bytes: {human_size_exact(summary.bytes)} total" in text
    assert f"{human_size_exact(summary.bytes_moved)} transferred" in text
