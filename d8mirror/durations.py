"""Go duration strings (``1m30s``, ``500ms``, ``-1s``, ``1.5h``), as d8 takes them in
``D8_MIRROR_TIMEOUT``; a bare number is read as seconds (an extension: ``30`` = ``30s``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from d8mirror.errors import ConfigError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)$")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration (``time.ParseDuration``); ValueError when it is none."""
    value = text.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    body = value[1:] if value[:1] in "+-" and value else value
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    if _NUMBER.match(body):
        return sign * float(body)
    total, position = 0.0, 0
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 1m30s, 500ms, 2h")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return sign * total


def env_duration(name: str, env: Mapping[str, str] | None = None) -> float | None:
    """The Go duration in environment variable ``name`` in seconds; None when unset or empty.
    Raises :class:`ConfigError` naming the variable when the value is no duration."""
    text = (env if env is not None else os.environ).get(name, "").strip()
    if not text:
        return None
    try:
        return parse_go_duration(text)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={text!r} is not a duration: use a Go duration such as 30s, 1m30s, 500ms or 2h"
        ) from exc
