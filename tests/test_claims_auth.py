"""README claims on credentials and Bearer tokens, against real registries.

* Bearer tokens are refreshed once their advertised lifetime has passed, and a token the
  registry refuses (expired by its clock) is replaced on the 401 and the request re-sent.
* Credentials come from a Prefect ``Secret`` block ("user:password" or a bare license token),
  or from docker's ``config.json`` (``auths``, ``credHelpers``), in a real pull and push.
* None of them -- nor a license token given on the command line, nor S3 keys -- is kept in
  logs, output, Prefect records or the bundle.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.main import main
from d8mirror.errors import UnauthorizedError
from d8mirror.pull.report import PullReport
from testbed import token_server
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

pytestmark = pytest.mark.usefixtures("prefect_server")

USER = "d8claims-user"
PASSWORD = "d8claims-Pa55-QWE"
LICENSE = "d8claims-LICENSE-4242-token"
HELPER_PASSWORD = "d8claims-helper-Pa55-RTY"
S3_ACCESS = "AKIAD8CLAIMSKEY"
S3_SECRET = "d8claims-s3-secret-ZXC"
SECRETS = (
    PASSWORD,
    LICENSE,
    HELPER_PASSWORD,
    S3_SECRET,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    base64.b64encode(f"license-token:{LICENSE}".encode()).decode(),
)
ROOT = "src/ee"
PACKAGE = "keyed"
D8_VARIABLES = (
    "D8_MIRROR_SOURCE_LOGIN",
    "D8_MIRROR_SOURCE_PASSWORD",
    "D8_MIRROR_LICENSE_TOKEN",
    "D8_MIRROR_REGISTRY_LOGIN",
    "D8_MIRROR_REGISTRY_PASSWORD",
)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """htpasswd registry: a user, the license-token user, and a user only a helper knows."""
    users = {USER: PASSWORD, "license-token": LICENSE, "helper-user": HELPER_PASSWORD}
    spec = SeedSpec(
        payload_size=8 << 10,
        packages=(
            PackageSpec(PACKAGE, ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=1),
        ),
    )
    with RegistryServer(
        tmp_path_factory.mktemp("claims-locked"), auth="htpasswd", users=users
    ) as server:
        with server.client() as client:
            seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("claims-locked-images"))
        yield server


@pytest.fixture
def no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No D8_MIRROR_* variables and an empty docker config dir (returned)."""
    for name in D8_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return config_dir


def _save_secret(name: str, value: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value=value).save(name, overwrite=True)


def _pull(server: RegistryServer, bundle: Path, **extra: object) -> PullReport:
    from flows.pull import run_pull
    from tasks.models import PullParameters

    return run_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{server.host}/{ROOT}",
            insecure=True,
            include_packages=[PACKAGE],
            **extra,
        )
    )


def _push(server: RegistryServer, bundle: Path, root: str, **extra: object) -> None:
    from flows.push import run_push
    from tasks.push import PushParameters

    run_push(
        PushParameters(
            bundle_dir=str(bundle), registry=f"{server.host}/{root}", insecure=True, **extra
        )
    )


def _pushed_tags(server: RegistryServer, root: str) -> list[str]:
    with server.client() as client:
        return client.list_tags(f"{root}/packages/{PACKAGE}")


# -- Bearer tokens ---------------------------------------------------------------------------


def _token_requests_during(server: RegistryServer, action: object) -> tuple[int, list[int]]:
    """(token requests, registry statuses) while ``action()`` runs."""
    assert server.token_server is not None and callable(action)
    server.token_server.clear_requests()
    server.clear_requests()
    action()
    return len(server.token_server.requests), [s for _, _, s in server.requests()]


def test_bearer_token_is_refreshed_when_its_lifetime_is_over(
    token_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """expires_in=2: after it, the next request fetches a new token first (no 401 needed)."""
    monkeypatch.setattr(token_server, "TOKEN_LIFETIME_SECONDS", 2)  # still valid at the registry
    with token_registry.client() as client:
        fetched, _ = _token_requests_during(
            token_registry, lambda: client.blob_exists("claims/refresh", "sha256:" + "1" * 64)
        )
        assert fetched == 1
        fetched, _ = _token_requests_during(
            token_registry, lambda: client.blob_exists("claims/refresh", "sha256:" + "1" * 64)
        )
        assert fetched == 0  # still fresh: reused
        time.sleep(2.2)
        fetched, statuses = _token_requests_during(
            token_registry, lambda: client.blob_exists("claims/refresh", "sha256:" + "1" * 64)
        )
    assert fetched == 1 and 401 not in statuses


def test_a_token_the_registry_refuses_is_replaced_on_401(
    token_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token server says 300 s, but its tokens die at the registry within ~3 s (the
    registry allows 60 s of clock skew): the cached token gets a 401, a new one is fetched
    and the request goes through."""
    server = token_registry.token_server
    assert server is not None
    real_issue = server.issue

    def short_lived(subject: str, scopes: list[str]) -> str:
        # JWT exp = now - 57 s; the registry accepts 60 s of clock skew: ~3 s to live. The
        # answer's expires_in is read after this returns: it still says 300.
        monkeypatch.setattr(token_server, "TOKEN_LIFETIME_SECONDS", -57)
        try:
            return real_issue(subject, scopes)
        finally:
            monkeypatch.setattr(token_server, "TOKEN_LIFETIME_SECONDS", 300)

    monkeypatch.setattr(server, "issue", short_lived)
    digest = "sha256:" + "2" * 64
    with token_registry.client() as client:
        fetched, _ = _token_requests_during(
            token_registry, lambda: client.blob_exists("claims/expired", digest)
        )
        assert fetched == 1
        time.sleep(3.5)
        try:
            fetched, statuses = _token_requests_during(
                token_registry, lambda: client.blob_exists("claims/expired", digest)
            )
        except UnauthorizedError as exc:
            pytest.fail(f"an expired token was not replaced: {exc}")
    assert statuses[0] == 401 and statuses[-1] == 404 and fetched == 1


# -- Secret blocks and docker config ----------------------------------------------------------


def test_secret_blocks_license_token_pull_and_user_password_push(
    locked: RegistryServer, no_ambient_credentials: Path, tmp_path: Path
) -> None:
    _save_secret("claims-license", LICENSE)  # the bare license-token form
    _save_secret("claims-userpass", f"{USER}:{PASSWORD}")
    bundle = tmp_path / "bundle"
    report = _pull(locked, bundle, credentials_block="claims-license")
    assert report.status == "completed"
    assert (bundle / f"package-{PACKAGE}.tar").is_file()
    _push(locked, bundle, "block/ee", credentials_block="claims-userpass")
    assert "v1.0.0" in _pushed_tags(locked, "block/ee")


def test_docker_config_auths_pull_and_credential_helper_push(
    locked: RegistryServer,
    no_ambient_credentials: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = no_ambient_credentials / "config.json"
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{locked.host}": {"auth": auth}}}))
    bundle = tmp_path / "bundle"
    assert _pull(locked, bundle).status == "completed"

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-d8claims"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'[ "$server" = "{locked.host}" ] || exit 1\n'
        f'echo \'{{"ServerURL":"{locked.host}","Username":"helper-user",'
        f'"Secret":"{HELPER_PASSWORD}"}}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config.write_text(json.dumps({"credHelpers": {locked.host: "d8claims"}}))
    locked.clear_requests()
    _push(locked, bundle, "helper/ee")
    assert "v1.0.0" in _pushed_tags(locked, "helper/ee")


# -- nothing secret is kept -------------------------------------------------------------------


def test_license_token_s3_keys_and_block_credentials_are_never_kept(
    locked: RegistryServer,
    no_ambient_credentials: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import boto3
    from test_reliability_secrets import _prefect_records
    from transfer_support import moto_endpoint

    caplog.set_level(logging.DEBUG)
    for name in D8_VARIABLES:
        monkeypatch.setenv(name, "")  # the CLI may write some of them; restored at teardown
    bundle = tmp_path / "bundle"
    assert (
        main(
            [
                "pull",
                str(bundle),
                "--source",
                f"{locked.host}/{ROOT}",
                "--insecure",
                "--include-package",
                PACKAGE,
                "--license",
                LICENSE,
            ]
        )
        == 0
    )
    _save_secret("claims-scan", f"{USER}:{PASSWORD}")
    _push(locked, bundle, "scan/ee", credentials_block="claims-scan")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto_endpoint() as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="claims")
        assert main(["upload", str(bundle), "s3://claims/site", "--endpoint-url", endpoint]) == 0
    out, err = capfd.readouterr()
    kept = "\n".join([out, err, caplog.text, _prefect_records()])
    for path in tmp_path.rglob("*.json"):
        kept += path.read_text(errors="replace")
    assert "mirror-pull" in kept and "upload" in kept  # real records were read
    leaks = [s for s in SECRETS if s in kept]
    assert leaks == [], "a credential was kept in logs, output or Prefect records"
