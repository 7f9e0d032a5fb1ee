"""Pure parts of push: routing, target parsing, tiny image, write-check env, summary, CLI args."""

from __future__ import annotations

import argparse

import pytest

from d8mirror.errors import ConfigError, InvalidReferenceError
from d8mirror.names import normalize_path_suffix
from d8mirror.push import tinyimage
from d8mirror.push.access import bypassed, check_timeout
from d8mirror.push.pusher import LayoutPushResult
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.summary import LayoutFailure, PushResult, render_push_summary
from d8mirror.registry import Credentials


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (None, "packages"),
        ("", "packages"),
        ("/packages", "packages"),
        ("/", ""),
        ("/my/pkgs/", "my/pkgs"),
    ],
)
def test_normalize_path_suffix(suffix: str | None, expected: str) -> None:
    assert normalize_path_suffix(suffix, "packages") == expected


def test_invalid_suffix_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        normalize_path_suffix("/Bad Path", "packages")


@pytest.mark.parametrize(
    ("layout", "default", "remapped", "root"),
    [
        ("packages/console", "packages/console", "my/pkgs/console", "console"),
        (
            "packages/console/version",
            "packages/console/version",
            "my/pkgs/console/version",
            "console/version",
        ),
        (
            "packages/console/extra/scanner",
            "packages/console/extra/scanner",
            "my/pkgs/console/extra/scanner",
            "console/extra/scanner",
        ),
        ("packages", "packages", "my/pkgs", ""),
        ("modules/m", "modules/m", "modules/m", "modules/m"),
        ("", "", "", ""),
        ("install", "install", "install", "install"),
    ],
)
def test_layout_path_is_registry_path_with_packages_remap(
    layout: str, default: str, remapped: str, root: str
) -> None:
    assert Router.from_suffixes().segment(layout) == default
    assert Router.from_suffixes("/my/pkgs").segment(layout) == remapped
    assert Router.from_suffixes("/").segment(layout) == root


def test_router_repository_and_packages_index() -> None:
    target = parse_target("https://registry.local:5000/deckhouse/ee")
    assert (
        str(Router.from_suffixes().repository(target, "packages/c/version"))
        == "registry.local:5000/deckhouse/ee/packages/c/version"
    )
    assert (
        str(Router.from_suffixes("/").packages_index(target)) == "registry.local:5000/deckhouse/ee"
    )
    assert Router.from_suffixes("", "/").segment("modules/m") == "m"


def test_target_without_path_is_rejected_with_the_reference_message() -> None:
    with pytest.raises(
        InvalidReferenceError, match=r"missing the repository path.*localhost:5000/deckhouse"
    ):
        parse_target("localhost:5000")
    with pytest.raises(InvalidReferenceError, match="can only contain"):
        parse_target("localhost:5000/Deckhouse")
    assert parse_target("myregistry/repo").path == "repo"


def test_tiny_image_is_deterministic() -> None:
    a, b = tinyimage.build("x"), tinyimage.build("x")
    assert a.manifest == b.manifest and a.digest == b.digest
    assert tinyimage.build("y").digest != a.digest
    assert len(tinyimage.build("w", payload_size=512).blobs) == 2


def test_write_check_environment() -> None:
    assert bypassed({"MIRROR_BYPASS_ACCESS_CHECKS": "1"})
    assert not bypassed({})
    assert check_timeout({}) == 15.0
    assert check_timeout({"D8_MIRROR_TIMEOUT": "2m"}) == 120.0
    assert check_timeout({"D8_MIRROR_TIMEOUT": "30"}) == 30.0
    with pytest.raises(ConfigError):
        check_timeout({"D8_MIRROR_TIMEOUT": "soon"})


def _result(**kw: object) -> PushResult:
    layouts = tuple(
        LayoutPushResult(
            layout=f"packages/{n}",
            repository=f"ee/packages/{n}",
            tags=(("v1.0.0", "sha256:" + "a" * 64),),
            blobs_uploaded=2,
            bytes_uploaded=2048,
        )
        for n in ("a", "b", "c")
    )
    from d8mirror.push.discovery_tags import DiscoveryTag

    discovery = tuple(
        DiscoveryTag(kind="packages", repository="ee/packages", tag=n, digest="sha256:" + "b" * 64)
        for n in ("a", "b", "c")
    )
    return PushResult(target="r:5000/ee", layouts=layouts, discovery=discovery, **kw)


def test_push_summary_counts_packages() -> None:
    text = render_push_summary(_result(elapsed_seconds=75))
    assert "╔══ Push summary" in text
    assert "Packages:   3" in text
    assert "Platform:   not present" in text and "Modules:    not present" in text
    assert "6 uploaded (6.0 KiB)" in text
    assert "Push completed." in text and "Elapsed: 1m15s" in text


def test_push_summary_names_failed_layouts() -> None:
    result = _result(
        failures=(LayoutFailure(layout="packages/x", repository="ee/packages/x", error="boom"),)
    )
    text = render_push_summary(result)
    assert not result.ok and "╔══ Push failed" in text
    assert "failed layouts: packages/x" in text and "packages/x: boom" in text
    assert {r["status"] for r in result.table_rows()} == {"pushed", "failed"}
    assert result.model_dump(mode="json")["failures"][0]["error"] == "boom"


def test_result_round_trips_through_json() -> None:
    layout = _result().layouts[0]
    assert LayoutPushResult.model_validate_json(layout.model_dump_json()) == layout
    result = _result()
    assert PushResult.model_validate_json(result.model_dump_json()) == result


def _args(*argv: str) -> argparse.Namespace:
    from app.main import build_parser

    return build_parser().parse_args(["push", *argv])


def test_cli_arguments() -> None:
    from app.commands.push import parameters
    from app.flags import target_login

    args = _args("/b", "r:5000/ee", "-u", "me", "-p", "pw", "--packages-path-suffix", "/p")
    params, creds = parameters(args), target_login(args)
    assert params.bundle_dir == "/b" and params.registry == "r:5000/ee"
    assert creds is not None and creds.username == "me" and "pw" not in repr(creds)
    assert "pw" not in params.model_dump_json()
    with pytest.raises(ConfigError, match="registry username not specified"):
        parameters(_args("/b", "r:5000/ee", "-p", "pw"))
    with pytest.raises(ConfigError, match="no packages to push"):
        parameters(_args("r:5000/ee"))
    with pytest.raises(InvalidReferenceError, match="missing the repository path"):
        parameters(_args("/b", "r:5000"))


def test_explicit_credentials_win_over_a_credentials_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import push as push_flow
    from tasks import runtime
    from tasks.push_models import PushParameters

    registered: dict[str, object] = {}
    monkeypatch.setattr(
        push_flow, "target_credentials", lambda registry, block=None: Credentials("from-block", "b")
    )
    monkeypatch.setattr(
        runtime,
        "register_endpoint",
        lambda registry, *, credentials=None, tls=None: registered.update({registry: credentials}),
    )
    params = PushParameters(bundle_dir="/b", registry="r.example/ee", credentials_block="blk")
    push_flow._register_target(params)
    assert registered["r.example"] == Credentials("from-block", "b")
    runtime.give_credentials("r.example", Credentials("from-cli", "c"))
    try:
        push_flow._register_target(params)
    finally:
        runtime.give_credentials("r.example", None)
    assert registered["r.example"] == Credentials("from-cli", "c")
