"""Image metadata and manifests from a real registry that d8 reads one way and we must too
(issue 12.12, 12.13), and hostile ones that must give named, non-retried errors (issue 13).

Everything the registry accepts is pushed into it as is (a zstd layer, an arm64-only index, an
index chain, layers declared with size 0 or no size, odd ``extra_images.json`` and
``version.json``). What ``docker-registry`` refuses to store (a manifest that is a JSON list,
``size: "abc"``, ``config`` as a string, a non-ASCII digest) is served by the fault proxy in
front of it, by digest, with bytes that hash to that digest."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from faultproxy import FaultProxy, Request, Response
from pull_stages import Stages

from d8mirror.blobstore import BlobStore
from d8mirror.errors import (
    InvalidManifestError,
    MirrorError,
    PlatformNotFoundError,
    is_retryable,
)
from d8mirror.layout import Layout
from d8mirror.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from d8mirror.pull.fetcher import ImageFetcher
from d8mirror.pull.options import PullOptions
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient, TLSOptions
from testbed.images import BuiltImage, ImageBuilder, Platform, canonical_json
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

ROOT = "meta/ee"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
PACKAGES = (
    "armonly",
    "chain",
    "extras-half",
    "extras-null",
    "extras-trailing",
    "hostile",
    "nosize",
    "sizezero",
    "versions",
    "zstdpkg",
)


def _push(client: RegistryClient, repository: str, tag: str, image: BuiltImage) -> str:
    for child in image.children:
        _push(client, repository, child.digest, child)
    for blob in image.blobs:
        if not client.blob_exists(repository, blob.digest):
            client.upload_blob(repository, blob.digest, blob.path, size=blob.size)
    return client.put_manifest(repository, tag, image.manifest, image.media_type)


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zstd_image(builder: ImageBuilder, files: dict[str, bytes]) -> BuiltImage:
    """An OCI image whose single layer is a zstd-compressed tar."""
    plain = _tar(files)
    layer = builder.bytes_blob(zstandard.ZstdCompressor().compress(plain), ZSTD_LAYER)
    config = builder.bytes_blob(
        canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()],
                },
            }
        ),
        OCI_CONFIG,
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": ZSTD_LAYER, "digest": layer.digest, "size": layer.size}],
        }
    )
    return BuiltImage(
        manifest, OCI_MANIFEST, "sha256:" + hashlib.sha256(manifest).hexdigest(), (config, layer)
    )


def _with_layer(image: BuiltImage, **changes: Any) -> BuiltImage:
    """``image`` with its first layer descriptor changed (``None`` drops a key)."""
    doc = json.loads(image.manifest)
    layer = {**doc["layers"][0], **changes}
    doc["layers"][0] = {k: v for k, v in layer.items() if v is not None}
    data = canonical_json(doc)
    return BuiltImage(
        data, image.media_type, "sha256:" + hashlib.sha256(data).hexdigest(), image.blobs
    )


def _index_of(child: BuiltImage, media_type: str = OCI_INDEX) -> BuiltImage:
    data = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": media_type,
                    "digest": child.digest,
                    "size": child.size,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    )
    return BuiltImage(data, OCI_INDEX, "sha256:" + hashlib.sha256(data).hexdigest(), (), (child,))


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    spec = SeedSpec(
        payload_size=8 << 10,
        extra_payload_size=1 << 10,
        packages=tuple(
            PackageSpec(name, ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0)
            for name in PACKAGES
        ),
    )
    images = tmp_path_factory.mktemp("meta-images")
    with (
        RegistryServer(tmp_path_factory.mktemp("meta-registry")) as server,
        server.client() as client,
    ):
        seed_packages(client, ROOT, spec, images)
        builder = ImageBuilder(images)
        pkg = f"{ROOT}/packages"
        # 12.12: zstd layers carry version.json, extra_images.json and images_digests.json
        internal = builder.image([{"internal.bin": b"internal"}])
        internal_digest = _push(client, f"{pkg}/zstdpkg", internal.digest, internal)
        _push(
            client,
            f"{pkg}/zstdpkg/version",
            "stable",
            _zstd_image(builder, {"version.json": b'{"version": "v1.0.0"}'}),
        )
        _push(
            client,
            f"{pkg}/zstdpkg",
            "v1.0.0",
            _zstd_image(
                builder,
                {
                    "extra_images.json": b'{"scanner": "v1"}',
                    "images_digests.json": json.dumps({"x": internal_digest}).encode(),
                },
            ),
        )
        _push(client, f"{pkg}/zstdpkg/extra/scanner", "v1", builder.image([{"s": b"zstd"}]))
        # 12.12: a multi-arch index without linux/amd64
        _push(
            client,
            f"{pkg}/armonly",
            "v1.0.0",
            builder.multi_arch(
                [{"arm.bin": b"arm"}],
                platforms=(Platform("linux", "arm64"), Platform("linux", "s390x")),
            ),
        )
        # 12.13: extra_images.json as Go reads it
        for name, content in (
            ("extras-half", b'{"scanner": 2.5}'),
            ("extras-null", b"null"),
            ("extras-trailing", b'{"scanner": "v1"}\n{"other": "v9"} junk'),
        ):
            _push(
                client, f"{pkg}/{name}", "v1.0.0", builder.image([{"extra_images.json": content}])
            )
            for tag in ("2", "v1"):
                _push(client, f"{pkg}/{name}/extra/scanner", tag, builder.image([{"s": b"x"}]))
        # 13: version.json whose version is no string, or no tag
        _push(
            client,
            f"{pkg}/versions/version",
            "stable",
            builder.image([{"version.json": b'{"version": 100}'}]),
        )
        _push(
            client,
            f"{pkg}/versions/version",
            "alpha",
            builder.image([{"version.json": b'{"version": "1.0\\ud800"}'}]),
        )
        _push(
            client,
            f"{pkg}/versions/version",
            "beta",
            builder.image([{"version.json": b'{"version": "../../../v2/_catalog"}'}]),
        )
        # 13: an index chain six levels deep
        image: BuiltImage = builder.image([{"chain.bin": b"c"}])
        for level in range(6):
            image = _index_of(image, OCI_MANIFEST if level == 0 else OCI_INDEX)
        _push(client, f"{pkg}/chain", "v1.0.0", image)
        # 13: layers declared with size 0 or without a size (the registry stores both)
        big = builder.image([{"big.bin": b"b" * 4096}])
        _push(client, f"{pkg}/sizezero", "v1.0.0", _with_layer(big, size=0))
        _push(client, f"{pkg}/nosize", "v1.0.0", _with_layer(big, size=None))
        yield server


def _client(host: str) -> RegistryClient:
    return RegistryClient(host, tls=TLSOptions(insecure=True))


def _puller(host: str, tmp_path: Path, **options: Any) -> Stages:
    opts = PullOptions(source=Repository.parse(f"{host}/{ROOT}"), **options)
    client = _client(host)
    return Stages(ImageFetcher(client, BlobStore(tmp_path / "store")), opts)


def _tags(path: Path) -> set[str | None]:
    return {e.short_tag for e in Layout.open(path).entries()}


# -- 12.12 -----------------------------------------------------------------------------------
def test_zstd_layers_give_versions_extras_and_internal_images(
    meta: RegistryServer, tmp_path: Path
) -> None:
    result = _puller(meta.host, tmp_path).pull("zstdpkg", tmp_path / "work")
    assert result.versions == ["v1.0.0"]
    assert _tags(tmp_path / "work" / "extra" / "scanner") == {"v1"}
    assert len([t for t in _tags(tmp_path / "work") if t and len(t) == 64]) == 1


def test_index_without_linux_amd64_is_an_error_naming_the_image(
    meta: RegistryServer, tmp_path: Path
) -> None:
    with pytest.raises(
        PlatformNotFoundError,
        match=r"packages/armonly@sha256:[0-9a-f]{64} "
        r"has no linux/amd64 image \(it has linux/arm64, linux/s390x\)",
    ) as err:
        _puller(meta.host, tmp_path).pull("armonly", tmp_path / "work")
    assert not is_retryable(err.value)


# -- 12.13 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "extras"),
    [
        ("extras-half", {"2"}),  # %.0f rounds half to even
        ("extras-null", None),  # null: no extras
        ("extras-trailing", {"v1"}),  # the first JSON value only
    ],
)
def test_extra_images_json_is_read_as_go_reads_it(
    meta: RegistryServer, tmp_path: Path, name: str, extras: set[str] | None
) -> None:
    _puller(meta.host, tmp_path).pull(name, tmp_path / "work")
    scanner = tmp_path / "work" / "extra" / "scanner"
    if extras is None:
        assert not scanner.exists()
    else:
        assert _tags(scanner) == extras


# -- 13: hostile metadata ------------------------------------------------------------------
def test_version_json_that_names_no_version_is_a_warning(
    meta: RegistryServer, tmp_path: Path
) -> None:
    result = _puller(meta.host, tmp_path).pull("versions", tmp_path / "work")
    assert result.versions == []
    text = "\n".join(result.warnings)
    assert 'packages/versions/version:stable: version.json: "version" is a JSON number' in text
    assert "packages/versions/version:alpha: version.json: version" in text
    assert (
        "packages/versions/version:beta: version.json: version '../../../v2/_catalog' is "
        "not a valid tag" in text
    )


def test_index_chains_stop_at_four_levels(meta: RegistryServer, tmp_path: Path) -> None:
    meta.clear_requests()
    with pytest.raises(InvalidManifestError, match="nests image indexes more than 4 levels"):
        _puller(meta.host, tmp_path).pull("chain", tmp_path / "work")
    assert meta.count("GET", f"{ROOT}/packages/chain/manifests/") <= 6


@pytest.mark.parametrize(
    ("name", "message"), [("sizezero", "declares size 0"), ("nosize", "declares no size")]
)
def test_layer_without_a_size_is_refused_before_any_download(
    meta: RegistryServer, tmp_path: Path, name: str, message: str
) -> None:
    meta.clear_requests()
    with pytest.raises(InvalidManifestError, match=message) as err:
        _puller(meta.host, tmp_path).pull(name, tmp_path / "work")
    assert not is_retryable(err.value)
    layer = json.loads(_client(meta.host).get_manifest(f"{ROOT}/packages/{name}", "v1.0.0").data)[
        "layers"
    ][0]["digest"]
    assert meta.count("GET", f"/blobs/{layer}") == 0


def _hostile_manifests() -> dict[str, bytes]:
    config = {
        "mediaType": OCI_CONFIG,
        "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    layer = {**config, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    return {
        "json-list": b'[{"schemaVersion": 2}]',
        "size-abc": canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": [{**layer, "size": "abc"}],
            }
        ),
        "config-string": canonical_json(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "sha256:abc", "layers": []}
        ),
        "non-ascii-digest": json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": [{**layer, "digest": "sha256:\u00e9\udc80"}],
            }
        ).encode(),
        "index-list": canonical_json(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {"digest": "x"}}
        ),
    }


@pytest.mark.parametrize("kind", sorted(_hostile_manifests()))
def test_hostile_manifest_is_a_named_error_asked_once(
    meta: RegistryServer, tmp_path: Path, kind: str
) -> None:
    """Served by digest for ``hostile:v1.0.0``: an InvalidManifestError naming the image, not
    an AttributeError/TypeError/ValueError/UnicodeEncodeError, and the manifest is not asked
    again (retrying gets the same bytes)."""
    data = _hostile_manifests()[kind]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    media_type = OCI_INDEX if kind.startswith("index") else OCI_MANIFEST
    headers = [("Content-Type", media_type), ("Docker-Content-Digest", digest)]

    def serve(request: Request) -> Response | None:
        if request.path.endswith("/packages/hostile/manifests/v1.0.0"):
            return Response(
                200,
                [*headers, ("Content-Length", str(len(data)))],
                head_only=request.method == "HEAD",
            )
        if request.path.endswith(f"/packages/hostile/manifests/{digest}"):
            return Response(200, headers, data)
        return None

    with FaultProxy(meta.host, intercept=serve) as proxy:
        with pytest.raises(MirrorError) as err:
            _puller(proxy.host, tmp_path).pull("hostile", tmp_path / "work")
        asked = proxy.count("GET", f"/packages/hostile/manifests/{digest}")
    assert isinstance(err.value, InvalidManifestError), repr(err.value)
    assert f"packages/hostile@{digest}" in str(err.value)
    assert not is_retryable(err.value)
    assert asked == 1


@pytest.mark.usefixtures("prefect_server")
def test_hostile_package_fails_alone_in_the_flow_without_task_retries(
    meta: RegistryServer, tmp_path: Path
) -> None:
    """Through the flow: the package with a layer of size 0 fails (named error in the
    report), its fetch task runs once (no Prefect retry), the other packages are pulled."""
    from flows.pull import PullFailed, run_pull
    from tasks.models import PullParameters

    bundle = tmp_path / "bundle"
    with pytest.raises(PullFailed, match="sizezero"):
        run_pull(
            PullParameters(
                bundle_dir=str(bundle),
                source=f"{meta.host}/{ROOT}",
                insecure=True,
                include_packages=["sizezero", "extras-half"],
                tmp_dir=str(tmp_path / "work"),
            )
        )
    report = json.loads((bundle / "report.json").read_text())
    status = {p["name"]: (p["status"], p.get("error") or "") for p in report["packages"]}
    assert status["extras-half"][0] == "pulled"
    assert status["sizezero"][0] == "failed" and "declares size 0" in status["sizezero"][1]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    # the fetch ran once (no task retry); the server records task runs from events, a moment
    # after the flow returns: poll until the run is final
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["fetch-sizezero"]))
            )
            seen = [(r.run_count, r.state.is_failed() if r.state else None) for r in runs]
            if (
                seen and all(r.state is not None and r.state.is_final() for r in runs)
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert seen == [(1, True)]
