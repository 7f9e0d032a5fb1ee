"""README reliability and interop claims on the wire, against real servers:

* faults on reused keep-alive connections (a pooled connection the server dropped, or reset)
  are retried like any network fault: the pull completes with the seeded digests;
* the concurrent upload flow writes its transfer manifest last, after every file, and never
  after a failed file;
* a bundle tar written the way Go's ``archive/tar`` writes it (PAX headers, directory
  entries, mode 0777) is pushed end to end, a blob over 1 MiB included.
"""

from __future__ import annotations

import itertools
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request, Response
from push_bundle_builder import Expected, build_package_layouts
from push_bundle_builder import PackageSpec as HandSpec

from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")

DEMO = "deckhouse/ee"
_ns = itertools.count()
GO_PACKAGE = "go-written-package-name"  # long enough for PAX 'path' records on its blobs


# -- keep-alive ---------------------------------------------------------------------------------


def test_dropped_reused_keep_alive_connections_are_retried(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """The proxy keeps connections open and, on 15 % of the requests that arrive on a reused
    connection, closes it without answering (the race a server's idle timeout causes)."""
    from flows.pull import run_pull
    from tasks.models import PullParameters

    bundle = tmp_path / "bundle"
    with FaultProxy(
        registry.host, keep_alive=True, reused_only=True, rate=0.15, kinds=("drop",), seed=14
    ) as proxy:
        report = run_pull(
            PullParameters(
                bundle_dir=str(bundle),
                source=f"{proxy.host}/{DEMO}",
                insecure=True,
                include_packages=["code"],
            )
        )
        assert proxy.reused_requests > 10  # connections were really reused
        assert proxy.fault_kinds().get("drop", 0) >= 1
    assert report.status == "completed"
    with tarfile.open(bundle / "package-code.tar") as tar:
        member = tar.extractfile("packages/code/index.json")
        assert member is not None
        tags = {
            m["annotations"][ANNOTATION_SHORT_TAG]: m["digest"]
            for m in json.load(member)["manifests"]
        }
    for version in ("v1.7.0", "v1.6.2", "v1.6.1"):
        assert tags[version] == demo_content.digest(f"{DEMO}/packages/code:{version}")


# -- upload flow: manifest last, no commit after a failure --------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from transfer_support import moto_endpoint

    with moto_endpoint() as endpoint:
        yield endpoint


def _upload(proxy: FaultProxy, bundle: Path, prefix: str) -> object:
    from flows.transfer import upload_bundle
    from tasks.transfer_models import UploadParameters

    return upload_bundle(
        UploadParameters(
            bundle_dir=str(bundle),
            url=f"s3://claims/{prefix}",
            endpoint_url=f"http://{proxy.host}",
            region="us-east-1",
            part_size_mib=5,
            file_concurrency=3,
        )
    )


def _writes(proxy: FaultProxy, prefix: str) -> list[str]:
    """Object keys written (PUT/POST, multipart parts included), in arrival order."""
    with proxy._lock:
        seen = list(proxy.seen)
    return [
        path.split(f"/claims/{prefix}/", 1)[1]
        for method, path in seen
        if method in ("PUT", "POST") and f"/claims/{prefix}/" in path
    ]


def test_upload_writes_the_manifest_last_and_never_after_a_failed_file(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from transfer_support import make_bundle

    from d8mirror.transfer import MANIFEST_NAME
    from flows.transfer import TransferFailed

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAD8CLAIMS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "d8claims-upload")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="claims")
    bundle = make_bundle(tmp_path / "src", big=256 << 10)
    files = sorted(p.name for p in bundle.iterdir() if p.is_file())
    upstream = s3_endpoint.removeprefix("http://")

    with FaultProxy(upstream) as proxy:
        _upload(proxy, bundle, "good")
        writes = _writes(proxy, "good")
    assert writes[-1] == MANIFEST_NAME and writes.count(MANIFEST_NAME) == 1
    assert set(files) <= set(writes[:-1])  # every file before the manifest

    refused = "package-beta.tar"

    def deny(request: Request) -> Response | None:
        if request.method == "PUT" and request.path.endswith(f"/bad/{refused}"):
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                b"<Message>Access Denied</Message></Error>"
            )
            return Response(403, [("Content-Type", "application/xml")], body)
        return None

    with FaultProxy(upstream, intercept=deny) as proxy:
        with pytest.raises(TransferFailed, match=refused):
            _upload(proxy, bundle, "bad")
        writes = _writes(proxy, "bad")
    assert refused in writes and MANIFEST_NAME not in writes
    keys = {
        o["Key"] for o in s3.list_objects_v2(Bucket="claims", Prefix="bad/").get("Contents", [])
    }
    assert f"bad/{MANIFEST_NAME}" not in keys and f"bad/{refused}" not in keys


# -- a Go archive/tar bundle --------------------------------------------------------------------


def _go_style_tar(src: Path, dest: Path, prefix: str) -> None:
    """Like d8's Go writer: PAX format (long blob paths get 'path' records), a directory entry
    before its files, mode 0777, sub-second mtimes (PAX 'mtime' records), no sidecar."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, names in os.walk(src):
            dirs.sort()
            relative = Path(directory).relative_to(src)
            arcdir = prefix if relative == Path(".") else f"{prefix}/{relative.as_posix()}"
            info = tarfile.TarInfo(arcdir + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o777, 1_700_000_000.25
            tar.addfile(info)
            for name in sorted(names):
                path = Path(directory) / name
                info = tarfile.TarInfo(f"{arcdir}/{name}")
                info.size, info.mode, info.mtime = path.stat().st_size, 0o777, 1_700_000_000.5
                info.uname = info.gname = ""
                with path.open("rb") as data:
                    tar.addfile(info, data)


def test_a_go_archive_tar_bundle_is_pushed_end_to_end(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    from flows.push import run_push
    from tasks.push import PushParameters

    expected = Expected()
    root = build_package_layouts(
        tmp_path / "work", HandSpec(GO_PACKAGE, layer_size=3 << 19), expected
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _go_style_tar(root, bundle / f"package-{GO_PACKAGE}.tar", f"packages/{GO_PACKAGE}")
    with tarfile.open(bundle / f"package-{GO_PACKAGE}.tar") as tar:
        members = tar.getmembers()
    assert any(m.isdir() for m in members) and {m.mode for m in members} == {0o777}
    assert any(len(m.name) > 100 and m.size > 1 << 20 for m in members)  # PAX path, big blob

    target = f"go-{next(_ns)}/ee"
    run_push(
        PushParameters(bundle_dir=str(bundle), registry=f"{registry2.host}/{target}", insecure=True)
    )
    with registry2.client() as client:
        for (repo, tag), digest in expected.tags.items():
            assert client.head_manifest(f"{target}/{repo}", tag).digest == digest
