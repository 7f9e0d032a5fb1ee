"""The nightly loop across the air gap, end to end through the CLI (issue 17).

Outside: a full pull of state A. Inside: its push writes the site's receipt. The source moves on
(a new version, channels moved so an old version drops out, a new package). Outside: a delta
pull of state B from that receipt, with a fresh cache, fetches no blob the receipt lists beyond
the metadata layers it must read to plan (counted at the source registry). Inside: the delta's
push leaves the site exactly where full pushes of A then B leave a reference root, and writes
the next receipt, which equals a scan of the site.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from moving_corpus import STATE_A, STATE_B, seed
from reliability_support import tags_and_digests

from app.main import main
from d8mirror.delta import read_delta
from d8mirror.receipt import read_receipt
from testbed.registry_server import RegistryServer

pytestmark = pytest.mark.usefixtures("prefect_server")


def _blob_gets(registry: RegistryServer, root: str) -> set[str]:
    return {
        path.rsplit("/", 1)[-1]
        for method, path, status in registry.requests()
        if method == "GET" and f"/v2/{root}/" in path and "/blobs/" in path and status == 200
    }


def _writes(registry: RegistryServer) -> list[tuple[str, str, int]]:
    return [r for r in registry.requests() if r[0] in ("PUT", "PATCH", "POST", "DELETE")]


def test_the_nightly_loop_ships_only_new_blobs_and_lands_where_full_pushes_would(
    registry: RegistryServer, registry2: RegistryServer, tmp_path: Path
) -> None:
    source, site, reference = "loop/ee", "loop-site/ee", "loop-reference/ee"
    pull = ["--source", f"{registry.host}/{source}", "--insecure"]
    seed(registry, source, STATE_A, tmp_path / "images")
    bundle_a = tmp_path / "bundle-a"
    assert main(["pull", str(bundle_a), *pull, "--tmp-dir", str(tmp_path / "cache")]) == 0

    receipt = tmp_path / "site" / "receipt.json"
    site_target = [f"{registry2.host}/{site}", "--insecure"]
    assert main(["push", str(bundle_a), *site_target, "--receipt-out", str(receipt)]) == 0
    first, first_sha = read_receipt(receipt)
    assert first.images and first.blobs and len(first.bundles) == 1

    seed(registry, source, STATE_B, tmp_path / "images")
    registry.clear_requests()
    delta_dir = tmp_path / "delta-b"
    fresh = ["--tmp-dir", str(tmp_path / "fresh-cache")]
    assert main(["pull", str(delta_dir), *pull, *fresh, "--delta-from", str(receipt)]) == 0
    report = json.loads((delta_dir / "report.json").read_text())
    fetched_held = _blob_gets(registry, source) & first.blobs
    assert len(fetched_held) == report["delta"]["metadata_blobs_read"]
    delta = read_delta(delta_dir)
    assert delta is not None and delta.base_receipt_sha256 == first_sha
    assert delta.omitted and delta.digests <= first.blobs

    registry2.clear_requests()
    push_delta = ["push", str(delta_dir), *site_target]
    receipts = ["--receipt-in", str(receipt), "--receipt-out", str(receipt)]
    assert main([*push_delta, *receipts]) == 0
    uploaded = {
        f"sha256:{m[1]}"
        for method, path, _ in _writes(registry2)
        if method == "PUT" and (m := re.search(r"digest=sha256(?::|%3A)([0-9a-f]{64})", path))
    }
    assert uploaded, "the delta's new blobs are uploaded"
    assert not uploaded & delta.digests  # held blobs are mounted or found, never uploaded
    second, _ = read_receipt(receipt)
    assert delta.id in second.bundles and first.bundles < second.bundles

    # The reference: full pushes of A, then of a full pull of B.
    bundle_b = tmp_path / "bundle-b"
    assert main(["pull", str(bundle_b), *pull, "--tmp-dir", str(tmp_path / "full-cache")]) == 0
    ref_target = [f"{registry2.host}/{reference}", "--insecure"]
    for bundle in (bundle_a, bundle_b):
        assert main(["push", str(bundle), *ref_target]) == 0
    assert tags_and_digests(registry2, site) == tags_and_digests(registry2, reference)

    # The site's next receipt says what a scan of the site says.
    scan = tmp_path / "scan" / "receipt.json"
    assert main(["receipt", *site_target, "-o", str(scan)]) == 0
    scanned, _ = read_receipt(scan)
    assert scanned.merged(bundles=second.bundles).same_holdings(second)

    # The same delta again changes nothing at the site, nor its receipt's holdings.
    registry2.clear_requests()
    assert main([*push_delta, *receipts]) == 0
    assert read_receipt(receipt)[0].same_holdings(second)
    assert all("/blobs/uploads/" in p for _, p, _ in _writes(registry2))  # the write check only
    assert tags_and_digests(registry2, site) == tags_and_digests(registry2, reference)
