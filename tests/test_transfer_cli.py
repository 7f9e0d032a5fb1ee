"""The upload/download/verify subcommands of the d8mirror parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from push_bundle_builder import PackageSpec, build_bundle

from app.main import build_parser
from app.session import Session
from d8mirror.errors import ConfigError


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with Session() as session:
        return int(args.run(args, session))


def test_verify_verdicts_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, _ = build_bundle(tmp_path, [PackageSpec("alpha")])
    assert _run(["verify", str(bundle)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    (bundle / "package-alpha.tar.sha256").unlink()
    assert _run(["verify", str(bundle), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert any("missing checksum file" in p for p in report["problems"])


def test_core_and_the_cli_parser_never_import_prefect() -> None:
    code = (
        "import sys, app.main, d8mirror.transfer.s3, d8mirror.transfer.oci_artifact, "
        "d8mirror.verify; app.main.build_parser(); "
        "assert 'prefect' not in sys.modules, 'prefect imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("url", ["ftp://x/y", "s3://A", "oci://host/repo", "oci://host/Repo:t"])
def test_bad_urls_are_config_errors_before_prefect(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _run(["upload", str(tmp_path), url])
    with pytest.raises(ConfigError):
        _run(["download", url, str(tmp_path)])
