"""One naming home: path suffixes, archive and sidecar names, the same rule for pull and push."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.main import main
from d8mirror import names
from d8mirror.errors import ConfigError
from d8mirror.push.routing import Router
from tasks.models import PullParameters


def test_archive_and_sidecar_names() -> None:
    assert names.package_archive_name("console") == "package-console.tar"
    assert names.chunk_name("package-console.tar", 3) == "package-console.tar.0003.chunk"
    assert names.chunk_name("x.tar", 12345) == "x.tar.12345.chunk"
    match = names.CHUNK_NAME.match("x.tar.0003.chunk")
    assert match is not None and match["base"] == "x.tar"
    assert names.sha256_sidecar(Path("b/x.tar")) == Path("b/x.tar.sha256")
    assert names.gost_sidecar(Path("b/x.tar.0000.chunk")) == Path("b/x.tar.0000.chunk.gostsum")


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [(None, "packages"), ("/packages", "packages"), (" /my/pkgs/ ", "my/pkgs"), ("/", "")],
)
def test_pull_and_push_normalise_the_same_way(suffix: str | None, expected: str) -> None:
    pull = PullParameters(bundle_dir="b", packages_path_suffix=suffix or "").options()
    assert pull.packages_path == expected
    assert Router.from_suffixes(suffix).packages_path == expected


def test_pull_rejects_an_invalid_suffix_with_a_config_error() -> None:
    params = PullParameters(bundle_dir="b", packages_path_suffix="/Bad Path")
    with pytest.raises(ConfigError) as raised:
        params.options()
    message = str(raised.value)
    assert "--packages-path-suffix" in message and "'/Bad Path'" in message
    assert "/packages" in message  # says what to pass instead


def test_pull_cli_refuses_an_invalid_suffix_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b"
    assert main(["pull", str(bundle), "--packages-path-suffix", "/Bad Path"]) == 1
    assert "--packages-path-suffix" in capsys.readouterr().err
    assert not bundle.exists() or not any(bundle.iterdir())


def test_push_names_the_modules_flag() -> None:
    with pytest.raises(ConfigError, match="--modules-path-suffix"):
        Router.from_suffixes("/packages", "/Bad")
