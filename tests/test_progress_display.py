"""The terminal display's formatting and its one thread (no flow: a Progress driven by hand)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest

from app.progress_display import Display, json_record, plain_line, resolve_mode, size_pair
from d8mirror.progress import Progress
from tasks import runtime

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    runtime.reset()
    yield
    runtime.reset()


def test_plain_line_has_the_documented_shape() -> None:
    clock = Clock()
    progress = Progress("pull", clock=clock)
    progress.expect_items(12)
    progress.item("a").expect({"sha256:1": int(40.1 * GiB)})
    for name in ("x", "y", "z"):
        progress.item(name).done()
    progress.moved("sha256:1", int(12.3 * GiB))
    clock.now = 12.3 * GiB / (85 << 20)  # 85 MiB/s since the start
    line = plain_line(progress.view())
    assert line.startswith("pull: 12.3/40.1 GiB (30%), 85.0 MiB/s, ETA ")
    assert line.endswith(", packages 3/12")
    assert "ETA 5m" in line


def test_plain_final_line_says_what_was_moved_and_reused() -> None:
    clock = Clock()
    progress = Progress("push", clock=clock)
    progress.expect_items(1)
    item = progress.item("packages/a")
    item.expect({"sha256:1": 3 << 20, "sha256:2": 1 << 20})
    item.reused("sha256:2", 1 << 20)
    item.moved("sha256:1", 3 << 20)
    item.blob_done("sha256:1", 3 << 20)
    item.done()
    clock.now = 2.0
    progress.finish()
    assert plain_line(progress.view()) == (
        "push: 4.0/4.0 MiB (100%), 1.5 MiB/s, done in 2s, layouts 1/1, "
        "blobs 2/2 (1 reused, 1.0 MiB)"
    )


def test_sizes_share_the_unit_of_the_total() -> None:
    assert size_pair(0, 0) == "0/0 B"
    assert size_pair(512, 1000) == "512/1000 B"
    assert size_pair(1 << 20, 3 << 30) == "0.0/3.0 GiB"
    assert size_pair(1536, 2048) == "1.5/2.0 KiB"


def test_json_record_is_exact_and_complete() -> None:
    progress = Progress("download", clock=Clock())
    progress.expect_items(2)
    progress.expect({"a.tar": 10, "b.tar": 20})
    progress.item("a.tar").phase("download")
    progress.moved("a.tar", 4)
    record = json_record(progress.view())
    assert {k: record[k] for k in ("operation", "bytes_done", "bytes_total", "items_total")} == {
        "operation": "download",
        "bytes_done": 4,
        "bytes_total": 30,
        "items_total": 2,
    }
    assert record["active"] == [
        {"name": "a.tar", "phase": "download", "bytes_done": 0, "bytes_total": 0}
    ]
    json.dumps(record)


def test_auto_is_plain_off_a_tty() -> None:
    assert resolve_mode("auto", io.StringIO()) == "plain"
    assert resolve_mode("json", io.StringIO()) == "json"


def test_the_thread_follows_the_current_progress_and_prints_final_lines() -> None:
    out = io.StringIO()
    display = Display("json", interval=0.05, stream=out)
    display.start()
    pull = runtime.open_progress("pull")
    pull.expect_items(1)
    pull.item("a").expect({"sha256:1": 100})
    pull.moved("sha256:1", 50)
    time.sleep(0.3)
    pull.blob_done("sha256:1", 100)
    pull.item("a").done()
    time.sleep(0.3)
    upload = runtime.open_progress("upload")  # pull --upload-to: the upload takes over
    upload.expect({"f": 5}, item="f")
    upload.blob_done("f", 5)
    upload.item("f").done()
    upload.finish()
    time.sleep(0.3)
    display.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ops = [line["operation"] for line in lines]
    assert ops == sorted(ops, key=["pull", "upload"].index)  # all pull lines, then upload
    last_pull = [line for line in lines if line["operation"] == "pull"][-1]
    assert (last_pull["bytes_done"], last_pull["items_done"]) == (100, 1)
    assert lines[-1]["operation"] == "upload" and lines[-1]["finished"]
    assert lines[-1]["bytes_done"] == lines[-1]["bytes_total"] == 5


def test_an_earlier_commands_progress_is_not_shown_again() -> None:
    earlier = runtime.open_progress("pull")  # the demo: a pull, then a push, one process
    earlier.finish()
    out = io.StringIO()
    display = Display("plain", interval=0.05, stream=out)
    display.start()
    time.sleep(0.2)
    push = runtime.open_progress("push")
    push.expect_items(0)
    push.finish()
    time.sleep(0.2)
    display.stop()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("push: ") for line in lines), lines


def test_none_prints_nothing() -> None:
    out = io.StringIO()
    display = Display("none", stream=out)
    display.start()
    runtime.open_progress("pull").finish()
    display.stop()
    assert out.getvalue() == ""


def test_batched_reports_about_once_per_mib_from_many_threads() -> None:
    import threading

    from d8mirror.progress import REPORT_EVERY, Batched

    reports: list[int] = []
    lock = threading.Lock()

    def report(count: int) -> None:
        with lock:
            reports.append(count)

    batched = Batched(report)
    piece = 8 << 10  # boto3's reads

    def send() -> None:
        for _ in range(REPORT_EVERY // piece * 4):
            batched(piece)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 16  # 16 MiB in 8 KiB pieces: 16 reports, not 2048
    assert sum(reports) == 16 * REPORT_EVERY
