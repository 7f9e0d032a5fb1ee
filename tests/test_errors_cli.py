"""Errors a person can read, through the real CLI (a subprocess against real servers): each
expected failure prints one block naming its category and the fix, no traceback, exit 1; -v
shows the traceback; the Prefect run's logs keep it; a bug still shows its traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from push_bundle_builder import PackageSpec, build_bundle

from app.main import main
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec as PackageSpec_
from testbed.seed import SeededContent, SeedSpec, seed_packages

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    assert url
    return url


def _cli(
    api_url: str, home: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``d8mirror argv`` in a new process recording into the test's Prefect server; fails fast
    (retry budget 1 s) and trusts no CA from the environment."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "D8_MIRROR_", "SSL_CERT_"))
    }
    base.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        D8_MIRROR_RETRY_BUDGET="1s",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-m", "app.main", *argv],
        env=base,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _told(done: subprocess.CompletedProcess[str], category: str, *fixes: str) -> str:
    """The stderr of a run told as one block of ``category`` with every text of ``fixes``."""
    err = done.stderr
    assert done.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    block = err[err.index(f"error: {category}\n") :]
    for fix in fixes:
        assert fix in block, block
    assert "  hint: " in block
    return block


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "prefect-home"


def test_unreachable_registry(api_url: str, home: Path, tmp_path: Path) -> None:
    pull = ["pull", str(tmp_path / "b"), "--source", "127.0.0.1:1/deckhouse/ee", "--insecure"]
    done = _cli(api_url, home, *pull, "--dry-run")
    block = _told(done, "registry unreachable", "registry: 127.0.0.1:1", "registry address")
    assert "cause: connection to 127.0.0.1:1 failed" in block
    assert len(done.stderr.splitlines()) < 20, done.stderr  # was 163 lines with 4 tracebacks

    verbose = _cli(api_url, home, *pull, "--dry-run", "-v")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "error: registry unreachable" in verbose.stderr

    # the run's logs in Prefect keep the full traceback (only the terminal is spared it)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterLevel

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(level=LogFilterLevel(ge_=40)), limit=200)
    assert any("Traceback" in log.message and "127.0.0.1:1" in log.message for log in logs)


def test_bad_credentials(
    api_url: str, home: Path, tmp_path: Path, basic_registry: RegistryServer
) -> None:
    done = _cli(
        api_url,
        home,
        *("pull", str(tmp_path / "b"), "--source", f"{basic_registry.host}/deckhouse/ee"),
        *("--insecure", "--dry-run", "--source-login", "testuser"),
        *("--source-password", "not-the-password"),
    )
    block = _told(done, "authentication failed", "--source-password", "--license")
    assert f"registry: {basic_registry.host}" in block
    assert "not-the-password" not in done.stderr + done.stdout


@pytest.fixture(scope="module")
def readonly_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Token auth: ``reader`` is granted only pull by the token server."""
    with RegistryServer(
        tmp_path_factory.mktemp("errors-ro"),
        auth="token",
        users={"reader": "read-pw"},
        read_only_users={"reader"},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small push bundle (treat as read-only)."""
    built, _ = build_bundle(tmp_path_factory.mktemp("errors-bundle"), [PackageSpec("console")])
    return built


def test_access_denied(
    api_url: str, home: Path, bundle: Path, readonly_registry: RegistryServer
) -> None:
    target = f"{readonly_registry.host}/mirror/ee"
    done = _cli(
        api_url, home, "push", str(bundle), target, "--insecure", "-u", "reader", "-p", "read-pw"
    )
    block = _told(done, "access denied", "push (target) rights")
    assert "read-pw" not in done.stderr + done.stdout
    assert readonly_registry.host in block


def test_tls_without_trust(
    api_url: str, home: Path, tmp_path: Path, tls_registry: RegistryServer
) -> None:
    done = _cli(
        api_url,
        home,
        *("pull", str(tmp_path / "b"), "--source", f"{tls_registry.host}/deckhouse/ee"),
        *("--dry-run", "--source-login", "testuser", "--source-password", "testpass"),
    )
    _told(done, "TLS verification failed", "--ca-file", "--tls-skip-verify")


def test_missing_bundle_file(api_url: str, home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "package-x.tar"
    done = _cli(api_url, home, "push", "--file", str(missing), "127.0.0.1:1/mirror", "--insecure")
    block = _told(done, "not found", "--file paths")
    assert f"  file: {missing}" in block


@pytest.fixture(scope="module")
def broken_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Two packages; a layer only ``broken`` has is deleted (404 BLOB_UNKNOWN, not retried)."""
    spec = SeedSpec(
        payload_size=16 << 10,
        packages=(
            PackageSpec_("fine", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0),
            PackageSpec_("broken", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0),
        ),
    )
    with RegistryServer(tmp_path_factory.mktemp("errors-source")) as server:
        with server.client() as client:
            seed_packages(client, "src/ee", spec, tmp_path_factory.mktemp("errors-images"))
            repo = "src/ee/packages/broken"
            layer = client.get_manifest(repo, "v1.0.0").json()["layers"][-1]["digest"]
        httpx.delete(f"{server.url}/v2/{repo}/blobs/{layer}").raise_for_status()
        yield server


def test_failed_packages_are_named_with_their_cause(
    api_url: str, home: Path, tmp_path: Path, broken_source: RegistryServer
) -> None:
    """A pull whose package failed: the block names the category of the cause, the failed
    package in one line, and no traceback; the good package is in the bundle."""
    bundle = tmp_path / "b"
    done = _cli(
        api_url, home, "pull", str(bundle), "--source", f"{broken_source.host}/src/ee", "--insecure"
    )
    block = _told(done, "not found", "--include-package", "run the same command again")
    failed = [line for line in block.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 1 and failed[0].startswith("  failed: broken: "), block
    assert "BlobNotFound" in failed[0]
    assert (bundle / "package-fine.tar").is_file()


def test_corrupt_bundle(api_url: str, home: Path, bundle: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in bundle.iterdir():
        data = path.read_bytes()
        if path.name == "package-console.tar":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        (damaged / path.name).write_bytes(data)
    done = _cli(api_url, home, "push", str(damaged), "127.0.0.1:1/mirror", "--insecure")
    _told(done, "corrupt bundle", "package-console.tar", "d8mirror verify")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"a size-capped tmpfs needs root: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def test_disk_full(
    api_url: str,
    home: Path,
    small_disk: Path,
    registry: RegistryServer,
    demo_content: SeededContent,
) -> None:
    done = _cli(
        api_url,
        home,
        *("pull", str(small_disk / "b"), "--source", f"{registry.host}/deckhouse/ee"),
        "--insecure",
    )
    _told(done, "disk full", "--tmp-dir", "--images-bundle-chunk-size", str(small_disk))


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception outside d8mirror's error tree is a bug: not told as a block, traced back."""

    def broken(args: argparse.Namespace, session: object) -> int:
        raise RuntimeError("a bug in d8mirror")

    import app.commands.verify as verify

    monkeypatch.setattr(verify, "run", broken)
    with pytest.raises(RuntimeError, match="a bug in d8mirror"):
        main(["verify", "."])
    code = (
        "import sys, app.commands.verify as v\n"
        "def broken(args, session):\n"
        "    raise RuntimeError('a bug in d8mirror')\n"
        "v.run = broken\n"
        "from app.main import main\n"
        "sys.exit(main(['verify', '.']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug in d8mirror" in done.stderr
    assert "error: " not in done.stderr.replace("RuntimeError: ", "")


def _on_a_tty(api_url: str, home: Path, *argv: str) -> tuple[int, str]:
    """(exit code, what the terminal showed) of ``d8mirror argv`` with stderr on a pty."""
    import pty
    import threading

    master, slave = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "D8_MIRROR_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_LOGGING_COLORS="false")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app.main", *argv],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=240,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return done.returncode, shown.decode(errors="replace")


def test_a_terminal_shows_no_per_task_lines_unless_verbose(
    api_url: str, home: Path, tmp_path: Path, registry: RegistryServer, demo_content: SeededContent
) -> None:
    pull = ["pull", str(tmp_path / "b"), "--source", f"{registry.host}/deckhouse/ee", "--insecure"]
    code, shown = _on_a_tty(api_url, home, *pull, "--dry-run")
    assert code == 0, shown
    assert "Pull plan (dry-run)" in shown  # d8mirror's own lines stay
    assert "Finished in state" not in shown and "Created task run" not in shown, shown
    code, shown = _on_a_tty(api_url, home, *pull, "--dry-run", "-v")
    assert code == 0, shown
    assert "Finished in state Completed()" in shown and "Pull plan (dry-run)" in shown
