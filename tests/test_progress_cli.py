"""Live progress through the CLI (issue 16, "Terminal"): what a user sees on stderr while a real
pull, push, upload and download run (``--progress=plain|json``, not a TTY), checked against
the real totals (the blob store a pull wrote, the blobs the bundle holds, its files)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import D8MIRROR, cli_env

from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

ROOT = "deckhouse/ee"
PLAIN = re.compile(
    r"^(?P<op>pull|push|upload|download): "
    r"(?P<done>[\d.]+)/(?P<total>[\d.]+) (?P<unit>B|KiB|MiB|GiB)"
    r" \((?P<pct>\d+)%\), [\d.]+ (?:B|KiB|MiB|GiB)/s, (?:ETA \S+|done in \S+), "
    r"(?P<word>packages|layouts|files) (?P<items>\d+)/(?P<items_total>\d+)"
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [D8MIRROR, *args],
        env=cli_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{"operation"')]


def _plain_lines(stderr: str) -> list[re.Match[str]]:
    return [m for line in stderr.splitlines() if (m := PLAIN.match(line))]


def _bytes(number: str, unit: str) -> float:
    return float(number) * float(1024 ** ["B", "KiB", "MiB", "GiB"].index(unit))


def _check_json(lines: list[dict[str, Any]], operation: str) -> dict[str, Any]:
    """Monotonic bytes and items, every line one operation; the last line complete."""
    assert lines, "no progress line"
    assert {line["operation"] for line in lines} == {operation}
    for before, after in itertools.pairwise(lines):
        assert after["bytes_done"] >= before["bytes_done"]
        assert after["items_done"] >= before["items_done"]
    for line in lines:
        assert 0 <= line["bytes_done"] <= line["bytes_total"]
        assert {"phase", "items_total", "blobs_done", "images_done", "rate", "eta"} <= set(line)
    last = lines[-1]
    assert last["finished"] and last["phase"] == "done"
    assert last["bytes_done"] == last["bytes_total"]
    assert last["items_done"] == last["items_total"]
    assert last["blobs_done"] == last["blobs_total"]
    return last


def _store_total(store: Path) -> tuple[int, int]:
    """(bytes, blobs) of a blob store's finished blobs."""
    files = [p for p in (store / "sha256").iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _bundle_blobs(bundle: Path) -> tuple[dict[str, int], set[str]]:
    """The unique blobs (digest → size) of every archive of ``bundle``, and its layouts."""
    blobs: dict[str, int] = {}
    layouts: set[str] = set()
    for archive in sorted(bundle.glob("*.tar")):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-3:-1] == ["blobs", "sha256"]:
                    blobs[parts[-1]] = member.size
                if parts[-1] == "oci-layout":
                    layouts.add("/".join(parts[:-1]))
    return blobs, layouts


@pytest.fixture(scope="module")
def pulled(
    registry: RegistryServer, demo_content: SeededContent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, str]]:
    """One real pull of the demo content with ``--progress=json`` (its working dir kept with
    ``--tmp-dir``, so the blob store it wrote can be weighed): (bundle, store, stderr)."""
    tmp = tmp_path_factory.mktemp("progress-pull")
    bundle, work = tmp / "bundle", tmp / "work"
    done = _cli(
        [
            "pull",
            str(bundle),
            "--source",
            f"{registry.host}/{ROOT}",
            "--insecure",
            "--tmp-dir",
            str(work),
            "--progress=json",
            "--progress-interval",
            "0.2",
        ],
        D8MIRROR_WARM_UP="0",
    )
    yield bundle, work / "blobs", done.stderr


def test_pull_json_lines_end_at_the_bytes_the_blob_store_holds(
    pulled: tuple[Path, Path, str],
) -> None:
    bundle, store, stderr = pulled
    last = _check_json(_json_lines(stderr), "pull")
    total, blobs = _store_total(store)
    assert (last["bytes_done"], last["bytes_total"], last["blobs_total"]) == (total, total, blobs)
    report = json.loads((bundle / "report.json").read_text())
    packages = [p["name"] for p in report["packages"]]
    assert last["items_total"] == len(packages) + 1  # package-versions.tar is one item too
    assert last["images_done"] == last["images_total"] > 0
    assert last["bytes_reused"] <= last["bytes_total"]


def test_pull_plain_lines_reach_100_percent(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    done = _cli(
        [
            "pull",
            str(tmp_path / "bundle"),
            "--source",
            f"{registry.host}/{ROOT}",
            "--insecure",
            "--progress=plain",
            "--progress-interval",
            "0.2",
        ],
        D8MIRROR_WARM_UP="0",
    )
    lines = _plain_lines(done.stderr)
    assert lines, done.stderr
    assert all(m["op"] == "pull" and m["word"] == "packages" for m in lines)
    # bytes done never go back (the percent may: totals grow as manifests are read), up to
    # the rounding of one decimal of the unit shown
    seen = [(_bytes(m["done"], m["unit"]), _bytes("0.05", m["unit"])) for m in lines]
    for (before, _), (after, slack) in itertools.pairwise(seen):
        assert after >= before - slack
    items = [int(m["items"]) for m in lines]
    assert items == sorted(items)
    last = lines[-1]
    assert "done in" in last.string and last["pct"] == "100"
    assert last["done"] == last["total"] and last["items"] == last["items_total"]
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())
    assert int(last["items_total"]) == len(report["packages"]) + 1


def test_push_json_lines_end_at_the_blobs_the_bundle_holds(
    pulled: tuple[Path, Path, str], registry2: RegistryServer, tmp_path: Path
) -> None:
    bundle, _store, _ = pulled
    done = _cli(
        [
            "push",
            str(bundle),
            f"{registry2.host}/progress/ee",
            "--insecure",
            "--tmp-dir",
            str(tmp_path / "push-work"),
            "--progress=json",
            "--progress-interval",
            "0.2",
        ],
        D8MIRROR_WARM_UP="0",
    )
    lines = _json_lines(done.stderr)
    last = _check_json(lines, "push")
    blobs, layouts = _bundle_blobs(bundle)
    assert (last["bytes_total"], last["blobs_total"]) == (sum(blobs.values()), len(blobs))
    assert last["items_total"] == len(layouts)
    # the totals are known once the bundle is unpacked, before any layout is pushed
    pushing = [line for line in lines if line["phase"] in ("push", "verify")]
    assert pushing and {line["bytes_total"] for line in pushing} == {last["bytes_total"]}
    # plain: the same run again finds everything at the target: all reused, still 100%
    again = _cli(
        [
            "push",
            str(bundle),
            f"{registry2.host}/progress/ee",
            "--insecure",
            "--tmp-dir",
            str(tmp_path / "push-work2"),
            "--progress=plain",
        ],
        D8MIRROR_WARM_UP="0",
    )
    [final] = [m for m in _plain_lines(again.stderr) if "done in" in m.string]
    assert final["op"] == "push" and final["pct"] == "100" and final["word"] == "layouts"
    assert f"({len(blobs)} reused" in final.string


def test_upload_and_download_lines_end_at_the_bundle_files(
    pulled: tuple[Path, Path, str], tmp_path: Path
) -> None:
    import boto3
    from transfer_support import moto_endpoint

    bundle, _store, _ = pulled
    files = {p.name: p.stat().st_size for p in bundle.iterdir() if p.is_file()}
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with moto_endpoint() as endpoint:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="airgap")
        url = ["s3://airgap/site", "--endpoint-url", endpoint]
        up = _cli(["upload", str(bundle), *url, "--progress=json"], **aws)
        last = _check_json(_json_lines(up.stderr), "upload")
        assert last["bytes_total"] == sum(files.values())
        assert (last["items_total"], last["blobs_total"]) == (len(files), len(files))
        assert last["bytes_reused"] == 0
        down_dir = tmp_path / "down"
        down = _cli(
            ["download", *url[:1], str(down_dir), *url[1:], "--progress=plain"],
            **aws,
        )
        [final] = [m for m in _plain_lines(down.stderr) if "done in" in m.string]
        assert final["op"] == "download" and final["word"] == "files"
        assert final["pct"] == "100" and final["items"] == final["items_total"] == str(len(files))
        again = _cli(["download", *url[:1], str(down_dir), *url[1:], "--progress=json"], **aws)
        last = _check_json(_json_lines(again.stderr), "download")
        assert last["bytes_reused"] == last["bytes_total"] == sum(files.values())


def test_pull_with_upload_to_shows_the_pull_then_the_upload(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """``pull --upload-to``: the display follows the upload when it takes over; the pull's
    last line is whole, then the upload's lines, the last one whole too."""
    import boto3
    from transfer_support import moto_endpoint

    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    bundle = tmp_path / "bundle"
    with moto_endpoint() as endpoint:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="airgap")
        done = _cli(
            [
                "pull",
                str(bundle),
                "--source",
                f"{registry.host}/{ROOT}",
                "--insecure",
                "--upload-to",
                "s3://airgap/site",
                "--upload-endpoint-url",
                endpoint,
                "--progress=json",
            ],
            D8MIRROR_WARM_UP="0",
            **aws,
        )
    lines = _json_lines(done.stderr)
    ops = [line["operation"] for line in lines]
    assert ops == ["pull"] * ops.count("pull") + ["upload"] * ops.count("upload"), ops
    pull = [line for line in lines if line["operation"] == "pull"]
    assert pull[-1]["bytes_done"] == pull[-1]["bytes_total"] > 0
    assert pull[-1]["items_done"] == pull[-1]["items_total"]
    last = _check_json([line for line in lines if line["operation"] == "upload"], "upload")
    files = {p.name: p.stat().st_size for p in bundle.iterdir() if p.is_file()}
    assert last["items_total"] == len(files)
    assert last["bytes_total"] == sum(files.values())
