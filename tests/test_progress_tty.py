"""The rich progress display on a real terminal: a pull run under ``tmux`` (a TTY, so
``--progress=auto`` picks rich), its screen captured mid-pull with ``tmux capture-pane``. The
capture is kept as test output (a file in the test's tmp dir, and printed: ``pytest -rA``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from reliability_support import D8MIRROR, cli_env

from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

ROOT = "deckhouse/ee"
TMUX = shutil.which("tmux") or "/usr/bin/tmux"
#: The overall bar line: the operation, rich's bar, done/total and the percent.
BAR = re.compile(r"^pull\s+[━╸╺ ]+\s+[\d.]+/[\d.]+ (?:B|KiB|MiB|GiB) \(\d+%\)", re.MULTILINE)
#: A package line: its name, its phase, its bytes.
PACKAGE = re.compile(
    r"^\s+(?:console|code|[\w-]+)\s+(?:resolve|fetch|pack)\s+[\d.]+/[\d.]+", re.MULTILINE
)
COUNTS = re.compile(r"packages \d+/\d+\s+images \d+/\d+\s+blobs \d+/\d+")


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TMUX, "-L", socket, *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.usefixtures("prefect_server")
def test_rich_display_on_a_tty_mid_pull(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    # Prefect's INFO lines on: they must print above the live display, never through it
    env = cli_env(
        D8MIRROR_WARM_UP="0",
        TERM="xterm-256color",
        PREFECT_LOGGING_LEVEL="INFO",
        COLUMNS="120",  # the pane's size (a COLUMNS inherited from pytest would win)
        LINES="40",
    )
    script = tmp_path / "pull.sh"
    exports = "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if re.fullmatch(r"\w+", k)
    )
    args = [
        D8MIRROR,
        "pull",
        str(tmp_path / "bundle"),
        "--source",
        f"{registry.host}/{ROOT}",
        "--insecure",
        "--concurrency",
        "1",
        "--blob-workers",
        "1",
        "-v",
    ]
    script.write_text(
        f"{exports}{shlex.join(args)}\necho EXIT=$? > {shlex.quote(str(tmp_path / 'rc'))}\n"
        "sleep 600\n"
    )
    socket = f"d8mirror-test-{uuid.uuid4().hex[:8]}"
    started = _tmux(
        socket, "new-session", "-d", "-s", "pull", "-x", "120", "-y", "40", f"sh {script}"
    )
    assert started.returncode == 0, started.stderr
    capture = ""
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            capture = _tmux(socket, "capture-pane", "-p", "-t", "pull").stdout
            bar = BAR.search(capture)
            if bar and PACKAGE.search(capture) and not bar[0].endswith(" 0/0 B (0%)"):
                break
            assert not (tmp_path / "rc").exists(), f"pull ended before a frame was seen:\n{capture}"
            time.sleep(0.05)
        capture = capture.rstrip() + "\n"
        (tmp_path / "screen.txt").write_text(capture)
        print(f"\n--- tmux capture mid-pull ({tmp_path / 'screen.txt'}) ---\n{capture}")
        assert BAR.search(capture), capture
        assert PACKAGE.search(capture), capture
        assert COUNTS.search(capture), capture
        assert "reused" in capture and "ETA" in capture
        # the run ends well, and the last frame and the final line stay on the screen
        deadline = time.monotonic() + 180
        while not (tmp_path / "rc").exists():
            assert time.monotonic() < deadline, "pull did not end"
            time.sleep(0.2)
        assert (tmp_path / "rc").read_text().strip() == "EXIT=0"
        end = _tmux(socket, "capture-pane", "-p", "-S", "-", "-t", "pull").stdout.rstrip() + "\n"
        (tmp_path / "screen-end.txt").write_text(end)
        print(f"--- tmux capture at the end (with the scrollback) ---\n{end}")
        assert re.search(r"^pull: [\d.]+/[\d.]+ \S+ \(100%\), .*done in", end, re.MULTILINE), end
        # the log lines went above the display: one frame left on the terminal, the last
        assert "Finished in state Completed()" in end
        assert len(BAR.findall(end)) == 1, end
    finally:
        _tmux(socket, "kill-server")
    assert os.path.getsize(tmp_path / "screen.txt") > 0
