"""parse_size: d8's integer decimal GB and explicit units."""

from __future__ import annotations

import pytest

from d8mirror.bundle import parse_size
from d8mirror.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5_000_000_000),
        (5, 5_000_000_000),
        ("0", 0),
        (0, 0),
        ("500MB", 500_000_000),
        ("5mb", 5_000_000),
        ("1GiB", 1024**3),
        ("1 gib", 1024**3),
        ("1.5GB", 1_500_000_000),
        ("2TB", 2 * 1000**4),
        ("1TiB", 1024**4),
        ("4096B", 4096),
        ("10KB", 10_000),
        ("3 KiB", 3072),
        ("3MiB", 3 * 1024**2),
        (" 7 ", 7_000_000_000),
    ],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1", -1, "-5GB"])
def test_negative_is_refused_with_d8_message(text: str | int) -> None:
    with pytest.raises(ConfigError, match=r"^Chunk size cannot be less than zero GB$"):
        parse_size(text)


@pytest.mark.parametrize("text", ["", "GB", "five", "5 XB", "1.5B", "1e3", "5GB5", "--5"])
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="chunk size"):
        parse_size(text)
