"""Receipts and delta descriptions: deterministic bytes, sidecar checks, merges, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from d8mirror.delta import Delta, OmittedBlob, is_delta_bundle, read_delta, write_delta
from d8mirror.errors import PathNotFoundError, ReceiptError, SealedFileError
from d8mirror.receipt import HeldImage, Receipt, parse_receipt, read_receipt, write_receipt


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def _receipt() -> Receipt:
    return Receipt.build(
        "registry.local:5000/deckhouse/ee/packages",
        [
            HeldImage("packages/b", "v1.0.0", _digest(2)),
            HeldImage("packages/a", "v1.0.0", _digest(1)),
        ],
        [_digest(9), _digest(8)],
        ["delta-20261201T000000Z-abc"],
        created="2026-12-01T00:00:00Z",
    )


def test_a_receipt_is_written_sorted_with_its_sidecar_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "receipt.json"
    hex_digest = write_receipt(_receipt(), path)
    text = path.read_text()
    assert text.index("packages/a") < text.index("packages/b")
    assert text.index(_digest(8)) < text.index(_digest(9))
    assert (tmp_path / "receipt.json.sha256").read_text().split()[0] == hex_digest
    again, again_hex = read_receipt(path)
    assert again == _receipt() and again_hex == hex_digest
    assert write_receipt(again, tmp_path / "copy.json") == hex_digest


@pytest.mark.parametrize("damage", ["byte", "truncate", "no-sidecar"])
def test_a_tampered_or_unverifiable_receipt_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "receipt.json"
    write_receipt(_receipt(), path)
    data = path.read_bytes()
    if damage == "byte":
        path.write_bytes(data.replace(b"v1.0.0", b"v1.0.1", 1))
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        (tmp_path / "receipt.json.sha256").unlink()
    with pytest.raises(SealedFileError, match=r"receipt\.json"):
        read_receipt(path)


def test_a_missing_receipt_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match=r"nowhere\.json"):
        read_receipt(tmp_path / "nowhere.json")


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"not json",
        b'{"format": "other/v1", "root": "r"}',
        b'{"format": "d8mirror.receipt/v1", "root": "r", "blobs": ["md5:1"]}',
        b'{"format": "d8mirror.receipt/v1", "root": "r", "images": [{"repository": "x"}]}',
    ],
)
def test_malformed_receipts_are_receipt_errors(body: bytes) -> None:
    with pytest.raises(ReceiptError):
        parse_receipt(body)


def test_a_merge_is_a_union_where_a_newer_tag_replaces_the_held_one() -> None:
    merged = _receipt().merged(
        [HeldImage("packages/a", "v1.0.0", _digest(3)), HeldImage("packages/c", "v2", _digest(4))],
        [_digest(7)],
        ["full-0123"],
    )
    assert [(i.repository, i.digest) for i in merged.images] == [
        ("packages/a", _digest(3)),
        ("packages/b", _digest(2)),
        ("packages/c", _digest(4)),
    ]
    assert merged.blobs == {_digest(7), _digest(8), _digest(9)}
    assert merged.bundles == {"full-0123", "delta-20261201T000000Z-abc"}
    assert merged.same_holdings(
        Receipt.build(merged.root, merged.images, merged.blobs, merged.bundles)
    )


def test_a_delta_description_round_trips_and_its_ids_sort_in_time(tmp_path: Path) -> None:
    omitted = [
        OmittedBlob(_digest(5), 10, "packages/b"),
        OmittedBlob(_digest(5), 10, "packages/a"),
        OmittedBlob(_digest(4), 20, "packages/a"),
    ]
    first = Delta.build("ab" * 32, omitted, now=datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    later = Delta.build("cd" * 32, [], now=datetime(2026, 12, 2, 1, 0, tzinfo=UTC))
    assert first.id < later.id
    assert [(b.digest, b.repository) for b in first.omitted] == [
        (_digest(4), "packages/a"),
        (_digest(5), "packages/a"),
    ]
    assert first.bytes_omitted == 30
    assert read_delta(tmp_path) is None and not is_delta_bundle(tmp_path)
    write_delta(tmp_path, first)
    assert read_delta(tmp_path) == first
    (tmp_path / "delta.json").write_text("{}")
    with pytest.raises(SealedFileError):
        read_delta(tmp_path)
