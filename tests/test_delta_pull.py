"""Delta pulls (issue 17): ``pull --delta-from RECEIPT`` against the real registry.

State A is seeded and pulled in full; a receipt is built from what A's bundle holds (as the
site's push would write it); the source moves on (a new version, channels moved, a new
package). The delta pull of the new state must GET no blob the receipt lists (counted in the
source registry's access log) beyond the metadata layers it must read, which a kept
``--tmp-dir`` already holds; its archives hold every index.json and manifest of a full pull of
the new state and none of the omitted blobs, which ``delta.json`` lists with their sizes.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from delta_support import receipt_of_bundle
from moving_corpus import STATE_A, STATE_B, seed

from d8mirror.delta import DELTA_FILE, read_delta
from d8mirror.errors import MirrorError, SealedFileError
from d8mirror.receipt import HeldImage, Receipt, write_receipt
from d8mirror.sealed import sidecar_of
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec

pytestmark = pytest.mark.usefixtures("prefect_server")


# -- helpers -------------------------------------------------------------------------------------
def _params(registry: RegistryServer, root: str, bundle: Path, **extra: Any) -> Any:
    from tasks.models import PullParameters

    return PullParameters(
        bundle_dir=str(bundle), source=f"{registry.host}/{root}", insecure=True, **extra
    )


def _pull(registry: RegistryServer, root: str, bundle: Path, **extra: Any) -> Any:
    from flows.pull import run_pull

    return run_pull(_params(registry, root, bundle, **extra))


def _archives(bundle: Path) -> dict[str, bytes]:
    """Every archive and its sidecars (report.json holds timings, delta.json a time stamp)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != "report.json" and not p.name.startswith(DELTA_FILE)
    }


def _members(bundle: Path) -> dict[str, dict[str, int]]:
    """Archive → its members (name → size)."""
    out: dict[str, dict[str, int]] = {}
    for archive in sorted(bundle.glob("*.tar")):
        with tarfile.open(archive) as tar:
            out[archive.name] = {m.name: m.size for m in tar.getmembers() if m.isfile()}
    return out


def _index_files(bundle: Path) -> dict[tuple[str, str], bytes]:
    out: dict[tuple[str, str], bytes] = {}
    for archive in sorted(bundle.glob("*.tar")):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.endswith("/index.json"):
                    data = tar.extractfile(member)
                    assert data is not None
                    out[(archive.name, member.name)] = data.read()
    return out


def _blob_gets(registry: RegistryServer, root: str) -> set[str]:
    """Digests of the blobs GET from the source under ``root`` since the last clear."""
    return {
        path.rsplit("/", 1)[-1]
        for method, path, status in registry.requests()
        if method == "GET" and f"/v2/{root}/" in path and "/blobs/" in path and status == 200
    }


def _blob_name(member: str) -> str | None:
    parts = member.split("/")
    if len(parts) >= 3 and parts[-3:-1] == ["blobs", "sha256"]:
        return f"sha256:{parts[-1]}"
    return None


# -- the loop --------------------------------------------------------------------------------------
def test_delta_pull_leaves_out_what_the_receipt_lists(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from flows.pull import mirror_pull

    root, work = "delta-loop/ee", tmp_path / "work"
    seed(registry, root, STATE_A, tmp_path / "images")
    _pull(registry, root, tmp_path / "a", tmp_dir=str(work))
    receipt = receipt_of_bundle(tmp_path / "a", tmp_path / "a-layouts")
    receipt_path = tmp_path / "site" / "receipt.json"
    receipt_sha = write_receipt(receipt, receipt_path)
    seed(registry, root, STATE_B, tmp_path / "images")

    full = tmp_path / "full-b"
    full_report = _pull(registry, root, full, tmp_dir=str(tmp_path / "full-work"))
    full_blobs = receipt_of_bundle(full, tmp_path / "full-layouts").blobs
    needed_and_held = full_blobs & receipt.blobs
    assert needed_and_held, "the new state must share blobs with the old one"
    assert full_blobs - receipt.blobs, "the new state must have new blobs"

    # A delta pull with a fresh --tmp-dir: receipt blobs are fetched only to read metadata.
    registry.clear_requests()
    delta_dir = tmp_path / "delta"
    state = mirror_pull(
        _params(
            registry,
            root,
            delta_dir,
            tmp_dir=str(tmp_path / "fresh-work"),
            delta_from=str(receipt_path),
        ),
        return_state=True,
    )
    report = state.result()
    fetched_held = _blob_gets(registry, root) & receipt.blobs
    assert report.delta is not None
    assert len(fetched_held) == report.delta.metadata_blobs_read
    assert len(fetched_held) < len(needed_and_held) / 2, (fetched_held, needed_and_held)

    delta = read_delta(delta_dir)
    assert delta is not None and delta.base_receipt_sha256 == receipt_sha
    assert delta.digests == needed_and_held
    full_sizes = {
        _blob_name(name): size
        for members in _members(full).values()
        for name, size in members.items()
        if _blob_name(name)
    }
    assert {b.digest: b.size for b in delta.omitted} == {d: full_sizes[d] for d in needed_and_held}
    assert all(b.repository.startswith("packages/") for b in delta.omitted)
    assert report.delta.delta_id == delta.id
    assert report.delta.blobs_omitted == len(delta.omitted)
    assert report.delta.bytes_omitted == delta.bytes_omitted
    assert report.delta.bytes_shipped == sum(a.size for a in report.archives)
    # The sizing counts no omitted blob: exact archive bytes, the blobs shipped only.
    assert full_report.sizing.blobs == len(full_blobs)
    assert report.sizing is not None
    assert report.sizing.blobs == len(full_blobs - receipt.blobs)
    assert report.sizing.bundle_bytes == report.delta.bytes_shipped

    # Every index.json of the full pull, byte for byte; its members but the omitted blobs.
    assert _index_files(delta_dir) == _index_files(full)
    full_members, delta_members = _members(full), _members(delta_dir)
    assert set(delta_members) == set(full_members)
    for archive, members in full_members.items():
        expected = {n: s for n, s in members.items() if _blob_name(n) not in needed_and_held}
        assert delta_members[archive] == expected, archive
    report_text = (delta_dir / "report.json").read_text()
    assert '"delta_id"' in report_text and '"bytes_omitted"' in report_text
    [row] = _artifact(state, "mirror-pull-delta")
    assert row["delta_id"] == delta.id and row["bytes_omitted"] == delta.bytes_omitted
    assert row["bytes_shipped"] == report.delta.bytes_shipped
    summary = _artifact(state, "mirror-pull-summary")
    assert "Pull summary (delta bundle)" in summary and "omitted (target has them)" in summary

    # The same delta pull again (what the UI's Retry runs): every package's cached fetch and
    # archive of this same delta are reused, nothing is packed again but package-versions.tar.
    packed = {p.name: p.stat().st_ino for p in delta_dir.glob("package-*.tar")}
    registry.clear_requests()
    _pull(
        registry,
        root,
        delta_dir,
        tmp_dir=str(tmp_path / "fresh-work"),
        delta_from=str(receipt_path),
    )
    assert not _blob_gets(registry, root)
    again = {p.name: p.stat().st_ino for p in delta_dir.glob("package-*.tar")}
    assert {n: i for n, i in again.items() if n != "package-versions.tar"} == {
        n: i for n, i in packed.items() if n != "package-versions.tar"
    }
    # One package pulled again on its own (mirror-package): delta.json keeps every entry.
    _repull_one_package(registry, root, delta_dir, tmp_path / "fresh-work", receipt_path)
    assert read_delta(delta_dir) is not None
    assert read_delta(delta_dir).omitted == delta.omitted  # type: ignore[union-attr]

    # The nightly way: the kept --tmp-dir holds every receipt blob: none is fetched.
    registry.clear_requests()
    nightly = tmp_path / "nightly"
    report = _pull(registry, root, nightly, tmp_dir=str(work), delta_from=str(receipt_path))
    assert not _blob_gets(registry, root) & receipt.blobs
    assert report.delta is not None and report.delta.metadata_blobs_read == 0
    nightly_delta = read_delta(nightly)
    assert nightly_delta is not None and nightly_delta.omitted == delta.omitted
    assert _archives(nightly) == _archives(delta_dir)

    # A full pull into the delta's dir with the same cache: no delta.json, a full bundle.
    _pull(registry, root, nightly, tmp_dir=str(work))
    assert not (nightly / DELTA_FILE).exists() and not sidecar_of(nightly / DELTA_FILE).exists()
    assert read_delta(nightly) is None
    assert _archives(nightly) == _archives(full)

    # ... and a delta pull after it with the same cache packs the delta again, not the full.
    after = tmp_path / "after"
    _pull(registry, root, after, tmp_dir=str(work), delta_from=str(receipt_path))
    assert _archives(after) == _archives(delta_dir)


def _artifact(state: Any, key: str) -> Any:
    """The data of artifact ``key`` of the flow run that ended in ``state``."""
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
    data: Any = artifact.data
    return json.loads(data) if artifact.type == "table" and isinstance(data, str) else data


def _repull_one_package(
    registry: RegistryServer, root: str, bundle: Path, work: Path, receipt: Path
) -> None:
    from flows.pull import mirror_package
    from tasks.models import MirrorPackageParameters

    before = _archives(bundle)
    registry.clear_requests()
    outcome = mirror_package(
        MirrorPackageParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/{root}",
            insecure=True,
            tmp_dir=str(work),
            delta_from=str(receipt),
            package="moving",
        )
    )
    assert outcome.status == "pulled" and outcome.archive == "package-moving.tar"
    assert not _blob_gets(registry, root)
    assert _archives(bundle) == before


# -- a receipt that cannot be trusted --------------------------------------------------------------
SMALL = SeedSpec(
    payload_size=4 << 10,
    extra_payload_size=1 << 10,
    packages=(PackageSpec("lone", ("v1.0.0",), channels={"stable": "v1.0.0"}),),
)


def _small_receipt(path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    write_receipt(
        Receipt.build("site/packages", [HeldImage("packages/lone", "v0.9.0", digest)], [digest]),
        path,
    )


@pytest.mark.parametrize("damage", ["one byte changed", "sidecar missing", "truncated"])
def test_an_untrusted_receipt_is_refused_before_anything_is_pulled(
    registry: RegistryServer, tmp_path: Path, damage: str
) -> None:
    root = f"delta-refused-{damage.split()[0]}/ee"
    seed(registry, root, SMALL, tmp_path / "images")
    receipt = tmp_path / "site" / "receipt.json"
    _small_receipt(receipt)
    data = receipt.read_bytes()
    if damage == "one byte changed":
        receipt.write_bytes(data.replace(b"v0.9.0", b"v0.9.1"))
    elif damage == "sidecar missing":
        sidecar_of(receipt).unlink()
    else:
        receipt.write_bytes(data[: len(data) // 2])
    bundle = tmp_path / "bundle"
    registry.clear_requests()
    with pytest.raises(SealedFileError) as raised:
        _pull(registry, root, bundle, delta_from=str(receipt))
    assert str(receipt) in str(raised.value)
    assert not any(f"/v2/{root}/" in p for _, p, _s in registry.requests())
    assert not bundle.exists() or not any(bundle.iterdir())


def test_the_cli_refuses_a_tampered_receipt_with_a_clear_error(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.main import main

    receipt = tmp_path / "receipt.json"
    _small_receipt(receipt)
    receipt.write_bytes(receipt.read_bytes().replace(b"v0.9.0", b"v0.9.1"))
    bundle = tmp_path / "bundle"
    code = main(
        [
            "pull",
            str(bundle),
            "--source",
            f"{registry.host}/delta-cli/ee",
            "--insecure",
            "--delta-from",
            str(receipt),
        ]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "receipt.json" in err and "checksum" in err, err
    assert not bundle.exists() or not any(bundle.iterdir())


def test_delta_cache_keys_name_the_receipt(tmp_path: Path) -> None:
    """Fetch keys (and so pack keys and the archive cache) differ between a full pull, a delta
    of one receipt and a delta of another: none reuses another's archive."""
    from d8mirror.pull.plan import PackagePlan
    from tasks.models import DeltaBase
    from tasks.pull import fetch_content_key

    params = _params_for_keys(tmp_path)
    plan = PackagePlan(
        name="x", versions=["v1.0.0"], digests={"v1.0.0": "sha256:" + "1" * 64}, channels={}
    )
    full = fetch_content_key(params, plan)
    one = params.model_copy(update={"delta_base": DeltaBase(path="r", sha256="a" * 64)})
    other = params.model_copy(update={"delta_base": DeltaBase(path="r", sha256="b" * 64)})
    keys = {full, fetch_content_key(one, plan), fetch_content_key(other, plan)}
    assert len(keys) == 3
    moved = one.model_copy(update={"delta_base": DeltaBase(path="elsewhere", sha256="a" * 64)})
    assert fetch_content_key(moved, plan) == fetch_content_key(one, plan)


def _params_for_keys(tmp_path: Path) -> Any:
    from tasks.models import PullParameters

    return PullParameters(bundle_dir=str(tmp_path / "b"), source="127.0.0.1:1/x/ee")


def test_a_missing_receipt_is_a_clear_error(registry: RegistryServer, tmp_path: Path) -> None:
    with pytest.raises(MirrorError) as raised:
        _pull(registry, "delta-missing/ee", tmp_path / "b", delta_from=str(tmp_path / "nope.json"))
    assert "nope.json" in str(raised.value)


# -- a receipt carried over S3 or as an OCI artifact -------------------------------------------
@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from transfer_support import ACCESS_KEY, SECRET_KEY

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("aws_keys")
def test_receipt_fetched_from_s3_and_checked(tmp_path: Path) -> None:
    from transfer_support import ACCESS_KEY, SECRET_KEY, moto_endpoint

    from d8mirror.receipt import read_receipt
    from d8mirror.transfer import s3
    from tasks.receipts import fetch_receipt

    local = tmp_path / "site" / "receipt.json"
    _small_receipt(local)
    with moto_endpoint() as endpoint:
        client = s3.make_client(
            s3.S3Settings(endpoint_url=endpoint, region="us-east-1"),
            s3.S3Credentials(ACCESS_KEY, SECRET_KEY),
        )
        client.create_bucket(Bucket="receipts")
        for path in (local, sidecar_of(local)):
            client.put_object(Bucket="receipts", Key=f"site/{path.name}", Body=path.read_bytes())
        for url in ("s3://receipts/site/receipt.json", "s3://receipts/site"):
            got = fetch_receipt(url, tmp_path / url[-4:], endpoint_url=endpoint)
            assert read_receipt(got) == read_receipt(local)
        client.put_object(
            Bucket="receipts",
            Key="site/receipt.json",
            Body=local.read_bytes().replace(b"v0.9.0", b"v0.9.1"),
        )
        got = fetch_receipt(
            "s3://receipts/site/receipt.json", tmp_path / "t", endpoint_url=endpoint
        )
        with pytest.raises(SealedFileError):
            read_receipt(got)
        with pytest.raises(MirrorError) as raised:
            fetch_receipt("s3://receipts/other/receipt.json", tmp_path / "m", endpoint_url=endpoint)
        assert "s3://receipts/other/receipt.json" in str(raised.value)


def test_receipt_fetched_from_an_oci_artifact(registry: RegistryServer, tmp_path: Path) -> None:
    from d8mirror.receipt import read_receipt
    from d8mirror.transfer import OciUrl, build_manifest, parse_transfer_url
    from d8mirror.transfer import oci_artifact as oci
    from tasks.receipts import fetch_receipt

    local = tmp_path / "site" / "receipt.json"
    _small_receipt(local)
    url = f"oci://{registry.host}/site/receipt:latest"
    target = parse_transfer_url(url)
    assert isinstance(target, OciUrl)
    manifest = build_manifest(local.parent, [local, sidecar_of(local)])
    with registry.client() as client:
        for entry in manifest.files:
            oci.upload_file(client, target, local.parent / entry.name, entry)
        oci.commit(client, target, manifest)
    got = fetch_receipt(url, tmp_path / "fetched", insecure=True)
    assert read_receipt(got) == read_receipt(local)


@pytest.mark.usefixtures("aws_keys")
def test_cli_delta_pull_from_a_receipt_in_s3(registry: RegistryServer, tmp_path: Path) -> None:
    """``pull --delta-from s3://…/receipt.json``: the receipt fetched, verified, and what it
    lists left out of the bundle (the whole package here: the site holds all of it)."""
    from transfer_support import ACCESS_KEY, SECRET_KEY, moto_endpoint

    from app.main import main
    from d8mirror.transfer import s3

    root = "delta-cli-s3/ee"
    seed(registry, root, SMALL, tmp_path / "images")
    full = tmp_path / "full"
    _pull(registry, root, full)
    receipt = receipt_of_bundle(full, tmp_path / "layouts")
    local = tmp_path / "site" / "receipt.json"
    write_receipt(receipt, local)
    with moto_endpoint() as endpoint:
        client = s3.make_client(
            s3.S3Settings(endpoint_url=endpoint, region="us-east-1"),
            s3.S3Credentials(ACCESS_KEY, SECRET_KEY),
        )
        client.create_bucket(Bucket="site-receipts")
        for path in (local, sidecar_of(local)):
            client.put_object(
                Bucket="site-receipts", Key=f"night/{path.name}", Body=path.read_bytes()
            )
        bundle = tmp_path / "delta"
        registry.clear_requests()
        code = main(
            [
                "pull",
                str(bundle),
                "--source",
                f"{registry.host}/{root}",
                "--insecure",
                "--delta-from",
                "s3://site-receipts/night/receipt.json",
                "--delta-from-endpoint-url",
                endpoint,
            ]
        )
    assert code == 0
    fetched = _blob_gets(registry, root)
    assert not fetched - receipt.blobs  # the site holds every blob
    delta = read_delta(bundle)
    assert delta is not None and delta.digests == receipt.blobs
    section = json.loads((bundle / "report.json").read_text())["delta"]
    assert section["delta_id"] == delta.id
    assert section["metadata_blobs_read"] == len(fetched) < len(receipt.blobs)
    for members in _members(bundle).values():
        assert not {_blob_name(n) for n in members} & receipt.blobs

    # A dry-run of the same delta: nothing to ship but manifests, no delta.json written.
    dry = tmp_path / "dry"
    report = _pull(registry, root, dry, dry_run=True, delta_from=str(local))
    assert report.sizing is not None and report.sizing.blobs == 0
    assert report.delta is None and not (dry / DELTA_FILE).exists()
