"""Release channel names of a package (``<root>/packages/<name>/version:<channel>``)."""

from __future__ import annotations

# Exact order matters: channel versions are read and listed in this order.
DEFAULT_CHANNELS: tuple[str, ...] = ("alpha", "beta", "early-access", "stable", "rock-solid")
# Optional: only used when ``version:lts`` exists upstream.
LTS_CHANNEL = "lts"
ALL_CHANNELS: tuple[str, ...] = (*DEFAULT_CHANNELS, LTS_CHANNEL)


def is_valid_channel(name: str) -> bool:
    """Whether ``name`` is one of the six channel names (case-sensitive, like the reference)."""
    return name in ALL_CHANNELS
