"""Parse archive chunk sizes (R-7.4; Q-SIZE).

d8 takes an integer number of *decimal gigabytes* (``5`` → 5·10⁹ bytes, ``0`` = no chunking).
d8mirror also accepts explicit units: decimal ``B KB MB GB TB`` and binary ``KiB MiB GiB TiB``,
case-insensitive, an optional space, and a decimal number (``1.5GB``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from d8mirror.errors import ConfigError

GB = 1000**3

_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(
    r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE
)
_HINT = "use an integer number of GB (d8 style, e.g. 5) or a size with a unit, e.g. 500MB, 1GiB"


def parse_size(text: str | int) -> int:
    """Bytes for a chunk size flag value; a bare number means decimal GB, 0 turns chunking off."""
    if isinstance(text, bool):
        raise ConfigError(f"invalid chunk size {text!r}: {_HINT}")
    if isinstance(text, int):
        return _scaled(Decimal(text), GB, str(text))
    match = _SIZE.match(text)
    if match is None:
        raise ConfigError(f"invalid chunk size {text!r}: {_HINT}")
    unit = match["unit"].lower()
    if unit and unit not in _UNITS:
        raise ConfigError(f"invalid chunk size {text!r}: unknown unit {match['unit']!r}; {_HINT}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits valid numbers only
        raise ConfigError(f"invalid chunk size {text!r}: {_HINT}") from exc
    return _scaled(number, _UNITS[unit] if unit else GB, text)


def _scaled(number: Decimal, unit: int, text: str) -> int:
    if number < 0:
        raise ConfigError("Chunk size cannot be less than zero GB")
    size = number * unit
    if size != size.to_integral_value():
        raise ConfigError(f"invalid chunk size {text!r}: it is not a whole number of bytes")
    return int(size)
