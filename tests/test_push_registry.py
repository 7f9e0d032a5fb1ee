"""Push against real registries (docker-registry on 127.0.0.1): round trip, idempotence,
auth modes, Q2 precedence, untagged descriptors, path-suffix remap, resume after failure."""

from __future__ import annotations

import io
import itertools
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from push_bundle_builder import (
    BASE_LAYER,
    SOURCE,
    Expected,
    HandLayout,
    PackageSpec,
    build_bundle,
    build_pinned_package,
    digest_of,
    make_layer,
    pack_package,
)
from push_stages import push_bundle

from d8mirror.bundle import discover_archives
from d8mirror.errors import NotFoundError
from d8mirror.mediatypes import OCI_INDEX
from d8mirror.push import tinyimage
from d8mirror.push.access import WRITE_CHECK_TAG, WriteCheckError, check_write_access
from d8mirror.push.discovery_tags import DISCOVERY_LABEL
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.summary import PushResult, render_push_summary
from d8mirror.registry import Credentials, RegistryClient, TLSOptions

_ns = itertools.count()


def _target(server: Any, name: str) -> str:
    return f"{server.host}/{name}-{next(_ns)}/ee"


def _push(
    server: Any,
    tmp: Path,
    bundle: Path,
    target: str,
    *,
    router: Router | None = None,
    client: RegistryClient | None = None,
) -> PushResult:
    with client or server.client() as c:
        return push_bundle(
            c,
            discover_archives(bundle),
            tmp / "tmp",
            parse_target(target),
            router or Router.from_suffixes(),
        )


def _assert_target_has(server: Any, target: str, expected: Expected) -> None:
    repo_root = parse_target(target).path
    discovery = tinyimage.build(DISCOVERY_LABEL).digest
    with server.client() as client:
        for (repo, tag), digest in sorted(expected.tags.items()):
            got = client.head_manifest(f"{repo_root}/{repo}", tag).digest
            assert got == (digest or discovery), f"{repo}:{tag}"


def _skopeo_digest(server: Any, ref: str) -> str:
    args = ["/usr/bin/skopeo", "inspect", "--raw", "--tls-verify=false"]
    if server.username:
        args += ["--creds", f"{server.username}:{server.password}"]
    raw = subprocess.run(
        [*args, f"docker://{ref}"], check=True, capture_output=True, timeout=60
    ).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_a_bundle_laid_out_by_hand_exactly_as_the_reference_writes_it_is_accepted(
    registry2: Any, tmp_path: Path
) -> None:
    bundle, expected = build_bundle(
        tmp_path, [PackageSpec("console"), PackageSpec("viewer")], with_index=True
    )
    target = _target(registry2, "hand")
    result = _push(registry2, tmp_path, bundle, target)
    assert result.ok, render_push_summary(result)
    _assert_target_has(registry2, target, expected)
    # an independent peer sees the same bytes (aliases included)
    assert (
        _skopeo_digest(registry2, f"{target}/packages/console/version:stable")
        == expected.tags[("packages/console/version", "v1.0.0")]
    )
    assert [d.tag for d in result.discovery] == ["console", "viewer"]
    assert "Packages:   2" in render_push_summary(result)
    assert not (tmp_path / "tmp").exists()  # the unified tree is gone (Q23)


def test_second_push_uploads_no_blob(registry2: Any, tmp_path: Path) -> None:
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(registry2, "twice")
    first = _push(registry2, tmp_path, bundle, target)
    assert first.ok and sum(r.blobs_uploaded for r in first.layouts) > 0
    registry2.clear_requests()
    second = _push(registry2, tmp_path, bundle, target)
    assert second.ok
    assert registry2.count("POST", "/blobs/uploads") == 0
    assert registry2.count("PATCH", "/blobs/uploads") == 0
    assert registry2.count("PUT", "/blobs/uploads") == 0
    assert registry2.count("PUT", "/manifests/") == 0
    assert sum(r.manifests_present for r in second.layouts) == len(
        [k for k in expected.tags if k[0] != "packages"]
    )


def test_blobs_already_in_target_are_not_uploaded_and_shared_blobs_are_mounted(
    registry2: Any, tmp_path: Path
) -> None:
    """The base layer is shared by console and viewer: uploaded once, mounted once."""
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    target = _target(registry2, "mount")
    registry2.clear_requests()
    result = _push(registry2, tmp_path, bundle, target)
    assert result.ok
    base_hex = digest_of(BASE_LAYER)[7:]
    uploads = [p for m, p, _ in registry2.requests() if m == "PUT" and base_hex in p]
    mounts = [
        p
        for m, p, s in registry2.requests()
        if m == "POST" and "mount=" in p and base_hex in p and s == 201
    ]
    assert len(uploads) + len(mounts) == 2  # one repository each: console, viewer
    assert len(uploads) >= 1
    _assert_target_has(registry2, target, expected)


@pytest.mark.parametrize("kind", ["basic_registry", "tls_registry", "token_registry"])
def test_push_to_authenticated_targets(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(kind)
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(server, kind)
    result = _push(server, tmp_path, bundle, target)
    assert result.ok, render_push_summary(result)
    _assert_target_has(server, target, expected)


def test_wrong_password_fails_every_layout_with_unauthorized(
    basic_registry: Any, tmp_path: Path
) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("console")])
    client = RegistryClient(
        basic_registry.host,
        credentials=Credentials("testuser", "nope"),
        tls=TLSOptions(insecure=True),
    )
    result = _push(basic_registry, tmp_path, bundle, _target(basic_registry, "bad"), client=client)
    assert not result.ok and not result.layouts
    assert result.failures and all("unauthorized" in f.error.lower() for f in result.failures)
    assert all("401" in f.error and "nope" not in f.error for f in result.failures)
    assert [d.tag for d in result.withheld] == ["console"]  # no discovery tag attempted


def test_pinned_alias_wins_over_package_versions_tar_with_a_warning(
    registry2: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pinned, expected = build_pinned_package(tmp_path / "a", "console", "v1.0.0")
    upstream, _ = build_bundle(
        tmp_path / "b", [PackageSpec("console", channels={"stable": "v1.1.0", "alpha": "v1.1.0"})]
    )
    bundle = tmp_path / "mixed"
    bundle.mkdir()
    for source in (pinned, upstream / "package-versions.tar"):
        (bundle / source.name).write_bytes(source.read_bytes())
    target = _target(registry2, "q2")
    with caplog.at_level(logging.WARNING, logger="d8mirror.push"):
        result = _push(registry2, tmp_path, bundle, target)
    assert result.ok
    _assert_target_has(registry2, target, expected)  # stable → v1.0.0, the pin
    conflicts = [w for w in result.warnings if "tag stable has 2 digests" in w]
    assert len(conflicts) == 1, result.warnings
    assert caplog.text.count("tag stable has 2 digests") == 1


def test_descriptor_without_short_tag_is_skipped_with_a_warning(
    registry2: Any, tmp_path: Path
) -> None:
    layout = HandLayout(tmp_path / "work" / "odd")
    tagged = layout.add_image("v1.0.0", f"{SOURCE}/packages/odd:v1.0.0", [make_layer({"a": b"1"})])
    data, untagged = layout.image_manifest([make_layer({"b": b"2"})], "untagged")
    layout.add(
        untagged,
        "application/vnd.oci.image.manifest.v1+json",
        len(data),
        None,
        f"{SOURCE}/packages/odd:untagged",
    )
    layout.write()
    bundle = tmp_path / "bundle"
    pack_package(bundle, layout.path, "odd")
    target = _target(registry2, "untagged")
    result = _push(registry2, tmp_path, bundle, target)
    assert result.ok
    assert any("has no short tag" in w and untagged in w for w in result.warnings)
    assert result.layouts[0].tags == (("v1.0.0", tagged),)


def test_packages_path_suffix_remaps_the_packages_segment(registry2: Any, tmp_path: Path) -> None:
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console")])
    target = _target(registry2, "suffix")
    result = _push(registry2, tmp_path, bundle, target, router=Router.from_suffixes("/my/pkgs"))
    assert result.ok
    root = parse_target(target).path
    with registry2.client() as client:
        for (repo, tag), digest in expected.tags.items():
            remapped = repo.replace("packages", "my/pkgs", 1)
            got = client.head_manifest(f"{root}/{remapped}", tag).digest
            assert got == (digest or tinyimage.build(DISCOVERY_LABEL).digest)
        assert client.list_tags(f"{root}/my/pkgs") == ["console"]


def test_index_is_pushed_whole_and_byte_exact(registry2: Any, tmp_path: Path) -> None:
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console")], with_index=True)
    target = _target(registry2, "index")
    assert _push(registry2, tmp_path, bundle, target).ok
    digest = expected.tags[("packages/console", "v1.1.0")]
    with registry2.client() as client:
        manifest = client.get_manifest(f"{parse_target(target).path}/packages/console", "v1.1.0")
        assert manifest.digest == digest and manifest.media_type == OCI_INDEX
        doc = json.loads(manifest.data)
        assert doc["annotations"] == {"org.example.top": "kept"}
        for child in doc["manifests"]:
            client.head_manifest(f"{parse_target(target).path}/packages/console", child["digest"])


def test_interrupted_push_completes_when_run_again(registry2: Any, tmp_path: Path) -> None:
    """One layout fails half-way (a layer's bytes do not hash to its digest: the registry
    refuses the upload); the rest is pushed, the failure is named; a rerun with the repaired
    bundle completes. (A layer missing from the bundle is refused before any upload.)"""
    bundle, expected = build_bundle(tmp_path, [PackageSpec("console"), PackageSpec("viewer")])
    archives = discover_archives(bundle)
    broken = tmp_path / "broken"
    broken.mkdir()
    # viewer's archive without its extra layer blob: the extra layout cannot be pushed
    import tarfile

    with (
        tarfile.open(bundle / "package-viewer.tar") as src,
        tarfile.open(broken / "package-viewer.tar", "w") as dst,
    ):
        extra_index = json.loads(
            src.extractfile(  # type: ignore[union-attr]
                "packages/viewer/extra/scanner/index.json"
            ).read()
        )
        manifest_digest = extra_index["manifests"][0]["digest"]
        manifest = json.loads(
            src.extractfile(  # type: ignore[union-attr]
                "packages/viewer/extra/scanner/blobs/sha256/" + manifest_digest[7:]
            ).read()
        )
        damaged = manifest["layers"][0]["digest"][7:]
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(damaged):
                data = bytes([data[0] ^ 1]) + data[1:]
            dst.addfile(member, io.BytesIO(data))
    mixed = [a for a in archives if a.name != "package-viewer.tar"] + [
        broken / "package-viewer.tar"
    ]
    target = _target(registry2, "resume")
    with registry2.client() as client:
        first = push_bundle(
            client,
            sorted(mixed, key=lambda p: p.name),
            tmp_path / "t1",
            parse_target(target),
            Router.from_suffixes(),
        )
    assert not first.ok
    assert first.failed_layouts == ["packages/viewer/extra/scanner"]
    assert "packages/viewer/extra/scanner" in render_push_summary(first)
    registry2.clear_requests()
    second = _push(registry2, tmp_path, bundle, target)
    assert second.ok
    _assert_target_has(registry2, target, expected)
    # only the failed layout needed uploads the second time
    uploaded = {r.layout for r in second.layouts if r.blobs_uploaded or r.manifests_put}
    assert uploaded == {"packages/viewer/extra/scanner"}


def test_write_check_proves_push_permission_and_writes_nothing(
    registry2: Any, basic_registry: Any
) -> None:
    target = parse_target(_target(registry2, "wcheck"))
    registry2.clear_requests()
    with registry2.client() as client:
        check_write_access(client, target)
        check_write_access(client, target)
        calls = [
            (m, p.split("/blobs/")[0]) for m, p, _ in registry2.requests() if p != "/v2/"
        ]  # the client's version check
        assert calls == [("POST", f"/v2/{target.path}"), ("DELETE", f"/v2/{target.path}")] * 2
        with pytest.raises(NotFoundError):
            client.head_manifest(target.path, WRITE_CHECK_TAG)
    anonymous = RegistryClient(basic_registry.host, tls=TLSOptions(insecure=True))
    with anonymous, pytest.raises(WriteCheckError, match="credentials validation failure"):
        check_write_access(anonymous, parse_target(f"{basic_registry.host}/x/ee"))
