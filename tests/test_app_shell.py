"""The application shell (``app/``): flags defined once and alike for every command, the one
``RegistryAccess`` model behind every flow's parameters, and explicit credentials that reach
the tasks through the session and the process registry, never through ``os.environ``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.commands import pull, push, transfer
from app.flags import source_login, target_login
from app.main import build_parser
from app.session import Session
from d8mirror.errors import ConfigError
from d8mirror.registry import Credentials, TLSOptions
from tasks import runtime
from tasks.credentials import source_credentials, target_credentials
from tasks.models import PullParameters
from tasks.push_models import PushParameters
from tasks.registry_access import RegistryAccess
from tasks.transfer_models import TransferTarget

REGISTRY = "registry.example:5000"


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    runtime.reset()
    yield
    runtime.reset()


def _every_command(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "pull": ["pull", str(tmp_path / "pulled")],
        "push": ["push", str(tmp_path / "bundle"), f"{REGISTRY}/deckhouse/ee"],
        "upload": ["upload", str(tmp_path / "bundle"), "s3://bucket/prefix"],
        "download": ["download", f"oci://{REGISTRY}/bundles/b:v1", str(tmp_path / "d")],
    }


def _ca_file_of_the_run(command: str, argv: list[str]) -> str | None:
    """The CA file the command would hand its flow."""
    args = build_parser().parse_args(argv)
    if command == "pull":
        return pull.parameters(args).ca_file
    if command == "push":
        return push.parameters(args).ca_file
    return TransferTarget(**transfer.target_fields(args)).ca_file


def test_every_command_trusts_ssl_cert_file_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--ca-file`` is one flag: its default is $SSL_CERT_FILE for pull, push, upload and
    download alike, an explicit value wins, and without either there is none."""
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/site/ca.pem")
    for command, argv in _every_command(tmp_path).items():
        assert _ca_file_of_the_run(command, argv) == "/etc/site/ca.pem", command
        assert _ca_file_of_the_run(command, [*argv, "--ca-file", "/mine.pem"]) == "/mine.pem"
    monkeypatch.delenv("SSL_CERT_FILE")
    for command, argv in _every_command(tmp_path).items():
        assert _ca_file_of_the_run(command, argv) is None, command


def test_every_command_shares_the_tls_flags(tmp_path: Path) -> None:
    for command, argv in _every_command(tmp_path).items():
        args = build_parser().parse_args([*argv, "--insecure", "--tls-skip-verify"])
        assert (args.insecure, args.tls_skip_verify) == (True, True), command


def test_every_flows_parameters_share_registry_access() -> None:
    shared = set(RegistryAccess.model_fields)
    assert shared == {"insecure", "tls_skip_verify", "ca_file", "credentials_block"}
    examples: list[RegistryAccess] = [
        PullParameters(bundle_dir="/b", insecure=True, ca_file="/ca.pem"),
        PushParameters(registry="r:5000/ee", insecure=True, ca_file="/ca.pem"),
        TransferTarget(url="s3://b/p", insecure=True, ca_file="/ca.pem"),
    ]
    for params in examples:
        assert isinstance(params, RegistryAccess)
        assert params.tls() == TLSOptions(insecure=True, skip_verify=False, ca_file="/ca.pem")


def test_login_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "D8_MIRROR_SOURCE_LOGIN",
        "D8_MIRROR_SOURCE_PASSWORD",
        "D8_MIRROR_LICENSE_TOKEN",
        "D8_MIRROR_REGISTRY_LOGIN",
        "D8_MIRROR_REGISTRY_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)

    def parsed(*argv: str) -> Credentials | None:
        args = build_parser().parse_args(["pull", "/b", *argv])
        return source_login(args)

    assert parsed() is None
    assert parsed("-l", "tok") == Credentials.license_token("tok")
    assert parsed("--source-login", "u", "--source-password", "pw") == Credentials("u", "pw")
    with pytest.raises(ConfigError, match="without --source-login"):
        parsed("--source-password", "pw")
    with pytest.raises(ConfigError, match="without --source-password"):
        parsed("--source-login", "u")
    monkeypatch.setenv("D8_MIRROR_REGISTRY_LOGIN", "env-user")
    monkeypatch.setenv("D8_MIRROR_REGISTRY_PASSWORD", "env-pw")
    args = build_parser().parse_args(["push", "/b", f"{REGISTRY}/ee"])
    assert target_login(args) == Credentials("env-user", "env-pw")


def test_the_session_gives_credentials_to_the_tasks_never_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("D8_MIRROR_SOURCE_LOGIN", "env-user")
    monkeypatch.setenv("D8_MIRROR_SOURCE_PASSWORD", "env-pw")
    environment = dict(os.environ)
    given = Credentials("cli-user", "cli-pw")
    with Session() as session:
        session.give_credentials(REGISTRY, given)
        session.give_credentials("other.example", None)
        assert source_credentials(REGISTRY) == given
        assert target_credentials(REGISTRY) == given
        assert source_credentials("other.example") == Credentials("env-user", "env-pw")
        assert dict(os.environ) == environment
    assert runtime.given_credentials(REGISTRY) is None
    assert source_credentials(REGISTRY) == Credentials("env-user", "env-pw")


def test_flow_parameters_carry_no_credential(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "pull",
            str(tmp_path / "b"),
            "--source-login",
            "u",
            "--source-password",
            "pw-never-a-parameter",
        ]
    )
    assert "pw-never-a-parameter" not in pull.parameters(args).model_dump_json()


def test_help_of_every_command_exits_0_without_prefect() -> None:
    code = (
        "import sys\nfrom app.main import main\n"
        "for command in ([], ['pull'], ['push'], ['receipt'], ['upload'], ['download'], "
        "['import'], ['verify'], ['gc'], ['setup']):\n"
        "    try:\n        main([*command, '--help'])\n"
        "    except SystemExit as done:\n        assert done.code == 0, command\n"
        "assert 'prefect' not in sys.modules, 'prefect imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "{pull,push,receipt,upload,download,import,verify,gc,setup}" in done.stdout
