"""A d8 command line for packages works unchanged (issue 12.6, 12.10), and the CLI's own safety
(issue 13): exit codes, d8's component flags, --no-pull-resume, --verbose-summary, the
--skip-vex-images warning, report.json and symlinks, credentials and child processes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reliability_support import run_cli

from app.main import main
from d8mirror.bundle import gost_hex_file
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeededContent, SeedSpec, seed_packages

ROOT = "compat/ee"
CHANNELS = {"alpha": "v1.1.0", "stable": "v1.0.0"}
USER, PASSWORD = "compat-user", "pw-d8mirror-never-in-env-7Q"


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryServer, SeededContent]]:
    spec = SeedSpec(
        payload_size=48 << 10,
        packages=(
            PackageSpec("alpha-pkg", ("v1.0.0", "v1.1.0"), channels=CHANNELS, internal_images=1),
            PackageSpec("beta-pkg", ("v1.0.0",), channels={"stable": "v1.0.0"}),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("compat-source")) as server:
        with server.client() as client:
            content = seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("compat-img"))
        yield server, content


@pytest.fixture(scope="module")
def secret_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    spec = SeedSpec(
        payload_size=16 << 10,
        packages=(PackageSpec("vault", ("v1.0.0",), channels={"stable": "v1.0.0"}),),
    )
    with RegistryServer(
        tmp_path_factory.mktemp("compat-secret"), auth="htpasswd", users={USER: PASSWORD}
    ) as server:
        with server.client() as client:
            seed_packages(client, ROOT, spec, tmp_path_factory.mktemp("compat-secret-img"))
        yield server


def _args(server: RegistryServer, bundle: Path, *flags: str) -> list[str]:
    return ["pull", str(bundle), "--source", f"{server.host}/{ROOT}", "--insecure", *flags]


# -- exit codes and d8's flags ------------------------------------------------------------------
def test_every_usage_error_exits_1_as_d8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cobra exits 1 on bad usage; argparse's own 2 is gone (unknown flag, exclusive pair,
    a missing value, our own checks)."""
    bundle = str(tmp_path / "b")
    for argv in (
        ["pull", bundle, "--no-such-flag"],
        ["pull", bundle, "--include-package", "a", "--exclude-package", "b"],
        ["pull", bundle, "--concurrency", "many"],
        ["pull"],
        ["frobnicate"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 1, argv
    assert main(["pull", bundle, "--include-package", "console@"]) == 1
    assert main(["pull", bundle, "-c", "-1"]) == 1
    assert "error:" in capsys.readouterr().err


def test_flags_of_components_not_mirrored_give_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """d8's platform/module/plugin flags parse with d8's types; using them is one error that
    names each of them (and nothing is started)."""
    code = main(
        [
            "pull",
            str(tmp_path / "b"),
            "-i",
            "console",
            "--include-module",
            "code@~1.2",
            "--deckhouse-tag",
            "v1.69.1",
            "--include-platform",
            ">=1.68",
            "--since-version",
            "1.60",
            "--include-plugin",
            "x",
            "-e",
            "y",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "packages only" in err and "not supported" in err
    for flag in (
        "--include-module",
        "--exclude-module",
        "--deckhouse-tag",
        "--include-platform",
        "--since-version",
        "--include-plugin",
    ):
        assert flag in err
    assert not (tmp_path / "b").exists()
    # d8's defaults select nothing: accepted (the next check, an empty constraint, answers)
    assert (
        main(
            [
                "pull",
                str(tmp_path / "c"),
                "--installer-tag",
                "latest",
                "--modules-path-suffix",
                "/modules",
                "--include-package",
                "console@",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "not supported" not in err and "quote" in err


@pytest.mark.usefixtures("prefect_server")
def test_d8_packages_command_line_works_unchanged(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    server, _ = source
    bundle = tmp_path / "bundle"
    assert (
        main(
            _args(
                server,
                bundle,
                "--no-platform",
                "--no-modules",
                "--no-security-db",
                "--no-installer",
                "--ignore-suspend",
                "--no-pull-resume",
                "--verbose-summary",
                "--include-package",
                "alpha-pkg",
            )
        )
        == 0
    )
    assert (bundle / "package-alpha-pkg.tar").is_file()
    assert not (bundle / "package-beta-pkg.tar").exists()


@pytest.mark.usefixtures("prefect_server")
def test_no_pull_resume_starts_without_the_cache(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """A rerun reuses the kept working dir's blob store; with --no-pull-resume it fetches
    every blob again (as d8 removes its working dir)."""
    server, _ = source
    bundle = tmp_path / "bundle"
    flags = ("--include-package", "alpha-pkg", "--force", "--tmp-dir", str(tmp_path / "cache"))
    assert main(_args(server, bundle, *flags)) == 0
    server.clear_requests()
    assert main(_args(server, bundle, *flags)) == 0
    assert not [p for m, p, _s in server.requests() if m == "GET" and "/blobs/" in p]
    server.clear_requests()
    assert main(_args(server, bundle, *flags, "--no-pull-resume")) == 0
    fetched = {p for m, p, _s in server.requests() if m == "GET" and "/blobs/" in p}
    # alpha-pkg's blobs again (package-versions.tar's release images of every catalog
    # package are fetched again too)
    assert len([p for p in fetched if "/packages/alpha-pkg/" in p]) >= 3, fetched
    assert (bundle / "package-alpha-pkg.tar").is_file()


# -- summary and warnings (printed by the flow's logger: a real child process) ------------------
def _summary(log: Path) -> str:
    text = log.read_text(errors="replace")
    start = text.rindex("╔══")
    return text[start : text.index("╚", start)]


@pytest.mark.usefixtures("prefect_server")
def test_summary_compact_by_default_and_per_package_on_request(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """#381: totals only by default; --verbose-summary lists packages and versions; the
    Edition line and the "extra images only" marker as d8 prints them; --skip-vex-images
    warns in d8's words."""
    server, _ = source
    log = tmp_path / "compact.log"
    assert (
        run_cli(
            _args(server, tmp_path / "a", "--skip-vex-images"), log, PREFECT_LOGGING_LEVEL="INFO"
        )
        == 0
    )
    compact = _summary(log)
    assert "║ Edition:    EE" in compact
    assert "║ Packages:   2" in compact
    assert "║     alpha-pkg" not in compact and "[v1.1.0" not in compact
    assert (
        "The skip-vex-images flag was detected: Vulnerability scanning may not work "
        "correctly when this flag is used."
    ) in log.read_text()

    log = tmp_path / "verbose.log"
    assert (
        run_cli(
            _args(server, tmp_path / "b", "--verbose-summary", "--only-extra-images"),
            log,
            PREFECT_LOGGING_LEVEL="INFO",
        )
        == 0
    )
    verbose = _summary(log)
    assert "║ Packages:   " in verbose and "extra images only" in verbose
    assert "║     alpha-pkg" in verbose and "║     beta-pkg" in verbose
    assert "skip-vex-images flag" not in log.read_text()


# -- report.json and credentials (issue 13) -----------------------------------------------------
@pytest.mark.usefixtures("prefect_server")
def test_report_json_never_follows_a_planted_symlink(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """A `report.json.tmp` symlink in the bundle dir must not make `pull --force` (as root)
    overwrite the file it points at."""
    server, _ = source
    bundle, victim = tmp_path / "bundle", tmp_path / "victim"
    bundle.mkdir()
    victim.write_text("precious\n")
    (bundle / "report.json.tmp").symlink_to(victim)
    (bundle / "report.json").symlink_to(victim)
    assert main(_args(server, bundle, "--include-package", "beta-pkg", "--force")) == 0
    assert victim.read_text() == "precious\n"
    report = bundle / "report.json"
    assert stat.S_ISREG(report.lstat().st_mode) and '"status": "completed"' in report.read_text()
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert not [p for p in bundle.iterdir() if p.name.startswith(".report.json")]


@pytest.mark.usefixtures("prefect_server")
def test_source_password_never_reaches_a_child_process(
    secret_source: RegistryServer, tmp_path: Path
) -> None:
    """--source-password stays in the CLI process: the gost12sum children a --gost-digest pull
    starts (a PATH shim that records its environment) never see it."""
    real = "/usr/bin/gost12sum"
    if not os.access(real, os.X_OK):
        pytest.skip("gost12sum (Debian gostsum) is not installed")
    shim, seen = tmp_path / "shim", tmp_path / "child-env"
    shim.mkdir()
    (shim / "gost12sum").write_text(f'#!/bin/sh\nenv >> {seen}\nexec {real} "$@"\n')
    (shim / "gost12sum").chmod(0o755)
    log = tmp_path / "pull.log"
    bundle = tmp_path / "bundle"
    code = run_cli(
        [
            "pull",
            str(bundle),
            "--source",
            f"{secret_source.host}/{ROOT}",
            "--insecure",
            "--source-login",
            USER,
            "--source-password",
            PASSWORD,
            "--gost-digest",
        ],
        log,
        PATH=f"{shim}:{os.environ['PATH']}",
        D8MIRROR_GOST_BACKEND="",
    )
    assert code == 0, log.read_text()[-3000:]
    assert (bundle / "package-vault.tar.gostsum").is_file()
    assert seen.is_file(), "no gost12sum child was started"
    child_env = seen.read_text()
    assert PASSWORD not in child_env and USER not in child_env
    # given through d8's environment variables: the children do not get them either
    seen.unlink()
    code = run_cli(
        [
            "pull",
            str(tmp_path / "env"),
            "--source",
            f"{secret_source.host}/{ROOT}",
            "--insecure",
            "--gost-digest",
        ],
        log,
        PATH=f"{shim}:{os.environ['PATH']}",
        D8MIRROR_GOST_BACKEND="",
        D8_MIRROR_SOURCE_LOGIN=USER,
        D8_MIRROR_SOURCE_PASSWORD=PASSWORD,
    )
    assert code == 0, log.read_text()[-3000:]
    assert seen.is_file() and PASSWORD not in seen.read_text()


# -- GOST sidecars as d8 writes them (issue 12.14) ----------------------------------------------
@pytest.mark.usefixtures("prefect_server")
def test_gost_sidecars_for_every_archive_only_after_a_fully_successful_pull(
    source: tuple[RegistryServer, SeededContent], tmp_path: Path
) -> None:
    """d8 writes `.gostsum` at the end, for every `.tar`/`.chunk` of the bundle dir (its own
    or not), and only when the pull fully succeeded."""
    server, _ = source
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "platform.tar").write_bytes(b"an archive d8 pulled earlier")
    assert (
        main(_args(server, bundle, "--include-package", "alpha-pkg", "--force", "--gost-digest"))
        == 0
    )
    archives = sorted(p.name for p in bundle.iterdir() if p.name.endswith(".tar"))
    assert archives == ["package-alpha-pkg.tar", "package-versions.tar", "platform.tar"]
    for name in archives:
        assert (bundle / f"{name}.gostsum").read_text() == gost_hex_file(bundle / name)

    repo = f"{ROOT}/packages/beta-pkg"
    with server.client() as client:
        layer = str(client.get_manifest(repo, "v1.0.0").json()["layers"][-1]["digest"])
        saved = tmp_path / "saved-layer"
        client.fetch_blob(repo, layer, saved)
        httpx.delete(f"{server.url}/v2/{repo}/blobs/{layer}").raise_for_status()
        failed = tmp_path / "failed"
        try:
            assert main(_args(server, failed, "--gost-digest")) == 1
        finally:
            client.upload_blob(repo, layer, saved)
    assert (failed / "package-alpha-pkg.tar").is_file()
    assert not list(failed.glob("*.gostsum"))
