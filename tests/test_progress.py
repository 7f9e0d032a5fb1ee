"""The progress tally: unique totals, exact done bytes, reused apart from moved, rate and ETA."""

from __future__ import annotations

import threading

from d8mirror.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_totals_count_each_blob_once_and_belong_to_the_first_item() -> None:
    progress = Progress("pull", clock=Clock())
    progress.item("a").expect({"sha256:1": 100, "sha256:2": 50})
    progress.item("b").expect([("sha256:2", 50), ("sha256:3", 10)])
    view = progress.view()
    assert (view.bytes_total, view.blobs_total) == (160, 3)
    assert {i.name: i.bytes_total for i in view.active} == {"a": 150, "b": 10}


def test_done_bytes_are_exact_even_when_a_restarted_download_reports_twice() -> None:
    progress = Progress("pull", clock=Clock())
    item = progress.item("a")
    item.expect({"sha256:1": 100})
    item.moved("sha256:1", 80)
    item.moved("sha256:1", 80)  # restarted after a fault: clamped at the size
    assert progress.view().bytes_done == 100
    item.blob_done("sha256:1", 100)
    item.blob_done("sha256:1", 100)  # a second report changes nothing
    view = progress.view()
    assert (view.bytes_done, view.bytes_total, view.blobs_done) == (100, 100, 1)


def test_reused_blobs_count_as_done_at_once_and_apart_from_moved_bytes() -> None:
    clock = Clock()
    progress = Progress("pull", clock=clock)
    progress.expect({"sha256:1": 1000, "sha256:2": 3000})
    progress.reused("sha256:2", 3000)
    clock.now = 1.0
    view = progress.view()
    assert (view.bytes_done, view.bytes_reused, view.blobs_reused) == (3000, 3000, 1)
    assert view.rate == 0.0 and view.eta is None  # nothing moved: no rate yet
    progress.moved("sha256:1", 500)
    clock.now = 2.0
    view = progress.view()
    assert view.rate == 250.0  # 500 bytes over 2 s; reused bytes are not a rate
    assert view.eta == 2.0
    assert view.fraction == 0.875


def test_items_phases_and_finish() -> None:
    progress = Progress("push", clock=Clock())
    progress.expect_items(2)
    progress.item("x").phase("push")
    progress.item("y").phase("verify")
    progress.item("x").done()
    view = progress.view()
    assert (view.items_done, view.items_total) == (1, 2)
    assert [(i.name, i.phase) for i in view.active] == [("y", "verify")]
    progress.finish()
    assert progress.view().finished and progress.view().phase == "done"


def test_blobs_not_expected_still_count() -> None:
    progress = Progress("upload", clock=Clock())
    progress.moved("f", 10)
    assert progress.view().bytes_total == 10
    progress.blob_done("f", 30)
    view = progress.view()
    assert (view.bytes_done, view.bytes_total) == (30, 30)


def test_many_threads_add_up() -> None:
    progress = Progress("pull", clock=Clock())
    progress.expect({f"sha256:{i}": 1000 for i in range(64)})

    def work(start: int) -> None:
        for i in range(start, 64, 8):
            for _ in range(10):
                progress.moved(f"sha256:{i}", 100)
            progress.blob_done(f"sha256:{i}", 1000)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view = progress.view()
    assert (view.bytes_done, view.blobs_done, view.bytes_total) == (64000, 64, 64000)


def test_units_read_as_a_person_reads_them() -> None:
    from d8mirror.units import human_duration, human_rate, human_size

    assert [human_size(n) for n in (0, 512, 1153433, 3 * 1024**4 * 1024)] == [
        "0 B",
        "512 B",
        "1.1 MiB",
        "3072.0 TiB",
    ]
    assert human_rate(85 * 1024**2) == "85.0 MiB/s"
    assert [human_duration(s) for s in (0.4, 42, 340, 7380)] == ["0s", "42s", "5m40s", "2h03m"]
