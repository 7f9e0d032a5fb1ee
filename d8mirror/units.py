"""How sizes, rates and durations read to a person: ``1.1 MiB``, ``85.0 MiB/s``, ``5m40s``.
One home for every summary, table, progress line and artifact."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(size: float) -> str:
    """Binary units with one decimal (``1.1 MiB``); whole bytes below 1 KiB (``512 B``)."""
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def human_rate(per_second: float) -> str:
    """Bytes per second as ``85.0 MiB/s``."""
    return f"{human_size(per_second)}/s"


def human_duration(seconds: float) -> str:
    """Whole seconds as ``42s``, ``5m40s``, ``2h03m``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def human_size_exact(size: int) -> str:
    """A size as a person reads it beside its exact byte count: ``1.1 MiB (1153433)``;
    bytes alone below 1 KiB (``512 B``)."""
    return human_size(size) if size < 1024 else f"{human_size(size)} ({size})"


def human_seconds(seconds: float) -> str:
    """A duration in a table: tenths of a second under a minute (``0.4s``, ``12.3s``),
    then as :func:`human_duration` (``5m40s``)."""
    return f"{max(0.0, seconds):.1f}s" if seconds < 59.95 else human_duration(seconds)
