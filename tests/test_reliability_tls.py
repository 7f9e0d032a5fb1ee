"""TLS through the CLI: verification is on by default; a self-signed registry fails with a hint
naming --tls-skip-verify and --ca-file, and works with either (pull and push)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from app.main import main
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeedSpec, seed_packages

ROOT = "tls/ee"
pytestmark = pytest.mark.usefixtures("prefect_server")
_ns = itertools.count()


@pytest.fixture(scope="module")
def seeded_tls(
    tls_registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
) -> RegistryServer:
    spec = SeedSpec(
        payload_size=16 << 10,
        packages=(
            PackageSpec("secure", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0),
        ),
    )
    with tls_registry.client() as client:
        seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("tls-images"))
    return tls_registry


def test_self_signed_registry_needs_trust_and_says_how(
    seeded_tls: RegistryServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in (
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "D8_MIRROR_SOURCE_LOGIN",
        "D8_MIRROR_SOURCE_PASSWORD",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("D8_MIRROR_SOURCE_LOGIN", "")  # the CLI writes them; restored after
    monkeypatch.setenv("D8_MIRROR_SOURCE_PASSWORD", "")
    assert seeded_tls.ca_file
    creds = [
        "--source-login",
        str(seeded_tls.username),
        "--source-password",
        str(seeded_tls.password),
    ]
    source = ["--source", f"{seeded_tls.host}/{ROOT}", *creds]

    assert main(["pull", str(tmp_path / "default"), *source]) == 1
    err = capfd.readouterr().err + caplog.text
    assert "TLS certificate verification failed" in err
    assert "--tls-skip-verify" in err and "--ca-file" in err
    assert not list((tmp_path / "default").glob("package-*.tar"))

    assert main(["pull", str(tmp_path / "skip"), *source, "--tls-skip-verify"]) == 0
    assert main(["pull", str(tmp_path / "ca"), *source, "--ca-file", seeded_tls.ca_file]) == 0
    assert (tmp_path / "ca" / "package-secure.tar").read_bytes() == (
        tmp_path / "skip" / "package-secure.tar"
    ).read_bytes()
    capfd.readouterr()

    target = f"{seeded_tls.host}/pushed-{next(_ns)}/ee"
    login = ["-u", str(seeded_tls.username), "-p", str(seeded_tls.password)]
    assert main(["push", str(tmp_path / "ca"), target, *login]) != 0
    err = capfd.readouterr().err + caplog.text
    assert "--tls-skip-verify" in err and "--ca-file" in err, err[-2000:]
    assert (
        main(["push", str(tmp_path / "ca"), target, *login, "--ca-file", seeded_tls.ca_file]) == 0
    )
    assert main(["push", str(tmp_path / "ca"), target, *login, "--tls-skip-verify"]) == 0
