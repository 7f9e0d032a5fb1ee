"""Receipts written by push (``--receipt-out``) and by a scan (``d8mirror receipt``), against
real registries: what they hold, that they are sealed and deterministic, that a scan of a pushed
target equals the push's receipt, that ``--receipt-in`` merges, and that a failed push writes
none."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import PackageSpec, build_bundle, damage_member
from push_stages import given_credentials

from d8mirror.delta import bundle_id
from d8mirror.errors import ConfigError, ReceiptError, SealedFileError
from d8mirror.push import tinyimage
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.summary import render_push_summary
from d8mirror.receipt import HeldImage, Receipt, read_receipt, write_receipt
from d8mirror.receipt_scan import root_path, scan_receipt
from d8mirror.registry import Credentials
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

_ns = itertools.count()
REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = tinyimage.build(DISCOVERY_LABEL)
TINY_BLOBS = frozenset(digest for digest, _data in TINY.blobs)


@pytest.fixture(scope="module")
def prefect_harness(prefect_server: None) -> None:
    """The session's Prefect test server (root conftest)."""


def _target(server: RegistryServer, name: str = "rc") -> str:
    return f"{server.host}/{name}-{next(_ns)}/ee"


def _push(target: str, bundle: Path, **options: Any) -> Any:
    from flows.push import run_push
    from tasks.push import PushParameters

    params = PushParameters(
        bundle_dir=str(bundle), registry=target, insecure=True, concurrency=2, **options
    )
    return run_push(params)


def _scan(server: RegistryServer, target: str, **options: Any) -> Receipt:
    repository = parse_target(target)
    with server.client() as client:
        return scan_receipt(client, repository, Router.from_suffixes(), **options)


def _bundle_images(expected: dict[tuple[str, str], str]) -> set[HeldImage]:
    """The images a push of the bundle gives: its tags, discovery tags as the tiny image."""
    return {HeldImage(repo, tag, digest or TINY.digest) for (repo, tag), digest in expected.items()}


def _bundle_blobs(work: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(blobs, manifests) among the blob files of the bundle's layouts; blobs with the tiny
    image's (the discovery tags)."""
    blobs: set[str] = set(TINY_BLOBS)
    manifests: set[str] = set()
    for path in work.glob("**/blobs/sha256/*"):
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            doc = None
        is_manifest = isinstance(doc, dict) and ("layers" in doc or "manifests" in doc)
        (manifests if is_manifest else blobs).add(f"sha256:{path.name}")
    return frozenset(blobs), frozenset(manifests)


# -- the scan ------------------------------------------------------------------------------------
def test_scan_of_a_filled_registry_lists_every_tag_and_reads_no_blob(
    registry: RegistryServer, demo_content: SeededContent
) -> None:
    root = demo_content.root
    want = {
        HeldImage(ref.rsplit(":", 1)[0].removeprefix(root + "/"), ref.rsplit(":", 1)[1], digest)
        for ref, digest in demo_content.refs.items()
        if "@" not in ref
    }
    registry.clear_requests()
    receipt = _scan(registry, f"{registry.host}/{root}")
    assert set(receipt.images) == want
    assert list(receipt.images) == sorted(want)
    assert receipt.root == f"{registry.host}/{root}/packages"
    assert {"packages/console/extra/scanner", "packages/stronghold/version"} <= (
        receipt.repositories
    )
    assert not [p for m, p, _ in registry.requests() if "/blobs/" in p]  # manifests only
    assert receipt.blobs and not receipt.blobs & receipt.manifests
    with registry.client() as client:  # the discovery tags' image counts too
        doc = client.get_manifest(f"{root}/packages", "console").json()
    assert {doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])} <= (
        receipt.blobs
    )
    assert receipt.bundles == frozenset()


def test_scan_without_catalog_finds_extras_from_extra_images_json(
    registry: RegistryServer, demo_content: SeededContent
) -> None:
    target = f"{registry.host}/{demo_content.root}"
    with_catalog = _scan(registry, target)
    registry.clear_requests()
    without = _scan(registry, target, catalog=False, omit_host=True)
    assert without.same_holdings(with_catalog)
    assert without.root == f"{demo_content.root}/packages"
    requests = registry.requests()
    assert not [p for _m, p, _s in requests if "_catalog" in p]
    assert [p for m, p, _s in requests if m == "GET" and "/blobs/" in p]  # layers were read


def test_scan_of_an_empty_target_is_an_empty_receipt(registry2: RegistryServer) -> None:
    receipt = _scan(registry2, _target(registry2, "empty"))
    assert (receipt.images, receipt.blobs) == ((), frozenset())


# -- push --receipt-out --------------------------------------------------------------------------
def test_push_writes_a_sealed_sorted_receipt_equal_to_a_scan(
    prefect_harness: None, registry2: RegistryServer, tmp_path: Path
) -> None:
    bundle, expected = build_bundle(
        tmp_path, [PackageSpec("console"), PackageSpec("viewer", extras={"flow": "1.0"})]
    )
    target = _target(registry2)
    out = tmp_path / "out" / "receipt.json"
    result = _push(target, bundle, receipt_out=str(out))
    assert result.ok and result.receipt == str(out)
    assert result.bundle_id == bundle_id(bundle)
    assert f"Receipt: {out} (bundle {result.bundle_id})" in render_push_summary(result)

    receipt, hex_digest = read_receipt(out)  # the sidecar verifies
    assert out.with_name("receipt.json.sha256").read_text().startswith(hex_digest)
    assert receipt.root == f"{target}/packages"
    assert set(receipt.images) == _bundle_images(expected.tags)
    assert receipt.blobs == _bundle_blobs(tmp_path / "work")[0]
    assert receipt.bundles == {bundle_id(bundle)}
    doc = json.loads(out.read_bytes())
    assert out.read_bytes() == receipt.to_bytes()  # canonical bytes
    assert doc["images"] == sorted(doc["images"], key=lambda i: (i["repository"], i["tag"]))
    assert doc["blobs"] == sorted(doc["blobs"])

    scanned = _scan(registry2, target)
    assert scanned.root == receipt.root
    assert scanned.merged(bundles=receipt.bundles).same_holdings(receipt)

    again = tmp_path / "again.json"
    second = _push(target, bundle, receipt_out=str(again), receipt_omit_host=True)
    written, _ = read_receipt(again)
    assert second.ok and written.root == f"{target.split('/', 1)[1]}/packages"
    assert root_path(receipt.root) == written.root
    assert written.same_holdings(receipt)  # same target, same bundle: same holdings
    same_moment = {"created": receipt.created, "root": receipt.root}
    assert written.to_json() | same_moment == receipt.to_json()  # deterministic


def test_a_pulled_demo_bundle_pushed_under_another_packages_path_equals_its_scan(
    prefect_harness: None,
    registry: RegistryServer,
    registry2: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
) -> None:
    """VEX tags, internal images, docker manifests and indexes, as a pull writes them; the
    packages pushed to ``<target>/pkgs`` (discovery tags there too)."""
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = tmp_path / "bundle"
    source = f"{registry.host}/{demo_content.root}"
    run_pull(PullParameters(bundle_dir=str(bundle), source=source, insecure=True))
    target = _target(registry2, "demo")
    out = tmp_path / "receipt.json"
    result = _push(target, bundle, receipt_out=str(out), packages_path_suffix="/pkgs")
    receipt, _ = read_receipt(out)
    assert result.ok and receipt.root == f"{target}/pkgs"
    assert {"packages/console/extra/enforcer", "packages/stronghold/version"} <= (
        receipt.repositories
    )
    with registry2.client() as client:
        assert "v1.7.0" in client.list_tags(f"{target.split('/', 1)[1]}/pkgs/code")
        repository = parse_target(target)
        router = Router.from_suffixes("/pkgs")
        scanned = scan_receipt(client, repository, router)
        unlisted = scan_receipt(client, repository, router, catalog=False)
    assert scanned.merged(bundles=receipt.bundles).same_holdings(receipt)
    assert unlisted.same_holdings(scanned)
    pushed = {(r.layout, tag) for r in result.layouts for tag, _digest in r.tags}
    assert {(i.repository, i.tag) for i in receipt.images if i.repository != "packages"} == pushed


def test_receipt_in_is_merged_and_a_scan_is_not_needed(
    prefect_harness: None, registry2: RegistryServer, tmp_path: Path
) -> None:
    first, _ = build_bundle(tmp_path / "a", [PackageSpec("console")])
    second, second_expected = build_bundle(
        tmp_path / "b", [PackageSpec("editor", extras={"lint": "2.0"})], with_index=True
    )
    target = _target(registry2)
    (tmp_path / "r1").mkdir()
    _push(target, first, receipt_out=str(tmp_path / "r1"))  # a directory: r1/receipt.json
    r1, _ = read_receipt(tmp_path / "r1" / "receipt.json")
    # what the site held before, as only the previous receipt knows it (not in the registry)
    ghost = HeldImage("packages/ghost", "v0.0.1", "sha256:" + "a" * 64)
    previous = r1.merged([ghost], ["sha256:" + "b" * 64])
    write_receipt(previous, tmp_path / "previous.json")

    registry2.clear_requests()
    result = _push(
        target,
        second,
        receipt_in=str(tmp_path / "previous.json"),
        receipt_out=str(tmp_path / "r2.json"),
    )
    r2, _ = read_receipt(tmp_path / "r2.json")
    assert result.ok
    assert set(previous.images) <= set(r2.images)  # the first push's images are kept
    assert ghost in r2.images and "sha256:" + "b" * 64 in r2.blobs
    assert set(r2.images) == set(previous.images) | _bundle_images(second_expected.tags)
    assert r2.bundles == {bundle_id(first), bundle_id(second)}
    # the index's children are manifests (not blobs), their configs and layers blobs
    blobs, manifests = _bundle_blobs(tmp_path / "b" / "work")
    assert blobs <= r2.blobs and not manifests & r2.blobs
    assert manifests - r2.manifests  # the children: not tagged, not blobs
    # the previous receipt was read, not the registry's tag lists
    assert not [p for m, p, _ in registry2.requests() if m == "GET" and "/tags/list" in p]
    scanned = _scan(registry2, target)
    assert set(scanned.images) == set(r2.images) - {ghost}
    assert scanned.blobs == r2.blobs - {"sha256:" + "b" * 64}


def test_a_push_without_receipt_in_scans_the_target(
    prefect_harness: None, registry2: RegistryServer, tmp_path: Path
) -> None:
    first, _ = build_bundle(tmp_path / "a", [PackageSpec("console")])
    second, _ = build_bundle(tmp_path / "b", [PackageSpec("editor")])
    target = _target(registry2)
    _push(target, first, receipt_out=str(tmp_path / "r1.json"))
    _push(target, second, receipt_out=str(tmp_path / "r2.json"))
    r1, _ = read_receipt(tmp_path / "r1.json")
    r2, _ = read_receipt(tmp_path / "r2.json")
    assert set(r1.images) < set(r2.images) and r1.blobs < r2.blobs
    assert {"packages/console", "packages/editor"} <= r2.repositories
    assert r2.bundles == {bundle_id(second)}  # a scan cannot know which bundles were applied
    again = _push(target, second)  # no receipt asked for: the id is still told
    assert (again.receipt, again.bundle_id) == (None, bundle_id(second))


def test_a_tampered_or_foreign_receipt_in_stops_the_push_before_any_write(
    prefect_harness: None, registry2: RegistryServer, tmp_path: Path
) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(registry2)
    path = tmp_path / "previous.json"
    write_receipt(Receipt.build(f"{target}/packages"), path)
    path.write_bytes(path.read_bytes().replace(b'"images"', b'"images" ', 1))
    registry2.clear_requests()
    with pytest.raises(SealedFileError, match="does not match its checksum"):
        _push(target, bundle, receipt_in=str(path), receipt_out=str(tmp_path / "new.json"))
    write_receipt(Receipt.build("elsewhere:5000/other/packages"), path)
    with pytest.raises(ReceiptError, match="other/packages"):
        _push(target, bundle, receipt_in=str(path), receipt_out=str(tmp_path / "new.json"))
    assert not [m for m, _p, _s in registry2.requests() if m in ("PUT", "POST", "PATCH")]
    assert not (tmp_path / "new.json").exists()


def test_a_failed_push_writes_no_receipt(
    prefect_harness: None, registry2: RegistryServer, tmp_path: Path, caplog: Any
) -> None:
    from flows.push import PushFailed

    bundle, _ = build_bundle(tmp_path, [PackageSpec("broken", extras={})])
    work = tmp_path / "work" / "broken"
    manifest_digest = json.loads((work / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((work / "blobs/sha256" / manifest_digest[7:]).read_text())
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for archive in bundle.glob("*.tar"):
        damage_member(archive, damaged / archive.name, manifest["layers"][-1]["digest"][7:])
    out = tmp_path / "receipt.json"
    with pytest.raises(PushFailed):
        _push(_target(registry2), damaged, receipt_out=str(out))
    assert not out.exists() and not out.with_name("receipt.json.sha256").exists()
    assert "No receipt written" in caplog.text


def test_receipts_hold_no_credentials(
    prefect_harness: None, basic_registry: RegistryServer, tmp_path: Path
) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(basic_registry)
    creds = Credentials(str(basic_registry.username), str(basic_registry.password))
    with given_credentials(basic_registry.host, creds):
        result = _push(target, bundle, receipt_out=str(tmp_path / "receipt.json"))
        from flows.receipt import run_receipt_scan
        from tasks.receipt_scan import ReceiptScanParameters

        scanned = run_receipt_scan(
            ReceiptScanParameters(registry=target, output=str(tmp_path), insecure=True)
        )
    assert result.ok and scanned == str(tmp_path / "receipt.json")
    text = (tmp_path / "receipt.json").read_text()
    assert basic_registry.password and basic_registry.password not in text
    assert str(basic_registry.username) not in text
    receipt, _ = read_receipt(tmp_path / "receipt.json")
    assert {"packages/console", "packages/console/version"} <= receipt.repositories


def _cli(tmp_path: Path, *argv: str) -> str:
    """``d8mirror *argv`` in a child process (its own Prefect home and early API server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPO_ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-m", "app.main", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_commands_write_receipts_without_the_credentials_they_were_given(
    basic_registry: RegistryServer, tmp_path: Path
) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(basic_registry, "cli")
    login = ["-u", str(basic_registry.username), "-p", str(basic_registry.password)]
    pushed = tmp_path / "pushed.json"
    output = _cli(
        tmp_path, "push", str(bundle), target, "--insecure", *login, "--receipt-out", str(pushed)
    )
    assert f"Receipt: {pushed}" in output
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    output = _cli(
        tmp_path, "receipt", target, "-o", str(scanned), "--insecure", "--receipt-omit-host", *login
    )
    assert f"Receipt written to {scanned / 'receipt.json'}" in output
    push_receipt, _ = read_receipt(pushed)
    scan_receipt_, _ = read_receipt(scanned / "receipt.json")
    assert scan_receipt_.merged(bundles=push_receipt.bundles).same_holdings(push_receipt)
    assert scan_receipt_.root == root_path(push_receipt.root)
    for path in (pushed, scanned / "receipt.json"):
        text = path.read_text()
        assert str(basic_registry.password) not in text
        assert str(basic_registry.username) not in text


# -- the command lines ---------------------------------------------------------------------------
def test_push_and_receipt_command_lines() -> None:
    from app.commands import push, receipt
    from app.main import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["push", "b", "r.local:5000/x/ee", "--receipt-out", "o.json", "--receipt-in", "i.json"]
    )
    params = push.parameters(args)
    assert (params.receipt_out, params.receipt_in, params.receipt_omit_host) == (
        "o.json",
        "i.json",
        False,
    )
    with pytest.raises(ConfigError, match="--receipt-in needs --receipt-out"):
        push.parameters(parser.parse_args(["push", "b", "r.local/x", "--receipt-in", "i"]))
    with pytest.raises(ConfigError, match="--dry-run"):
        push.parameters(
            parser.parse_args(["push", "b", "r.local/x", "--receipt-out", "o", "--dry-run"])
        )
    scan = receipt.parameters(
        parser.parse_args(
            [
                "receipt",
                "r.local:5000/x/ee",
                "-o",
                "out",
                "--packages-path-suffix",
                "/pkgs",
                "--receipt-omit-host",
                "--no-catalog",
                "--insecure",
            ]
        )
    )
    assert scan.router().packages_path == "pkgs" and scan.receipt_omit_host
    assert not scan.catalog and scan.insecure
    assert scan.output_file() == Path("out")


# -- roots ---------------------------------------------------------------------------------------
def test_roots_with_and_without_host() -> None:
    from d8mirror.receipt_scan import check_same_root, receipt_root

    target = parse_target("registry.local:5000/deckhouse/ee")
    assert (
        receipt_root(target, Router.from_suffixes()) == "registry.local:5000/deckhouse/ee/packages"
    )
    assert receipt_root(target, Router.from_suffixes("/"), omit_host=True) == "deckhouse/ee"
    assert receipt_root(target, Router.from_suffixes("/a/b/"), omit_host=True) == "deckhouse/ee/a/b"
    assert root_path("localhost/x/packages") == root_path("x/packages") == "x/packages"
    assert root_path("10.0.0.5:5000/x/packages") == "x/packages"
    check_same_root(
        Receipt.build("deckhouse/ee/packages"), "other.host/deckhouse/ee/packages", where="r"
    )
    with pytest.raises(ReceiptError, match="deckhouse/ce/packages"):
        check_same_root(
            Receipt.build("registry.local:5000/deckhouse/ce/packages"),
            "registry.local:5000/deckhouse/ee/packages",
            where="r",
        )
