"""Close what a test opened and left open.

Tests build :class:`RegistryClient` objects freely (helpers return them, stage objects keep
them), and the Prefect layer caches clients per registry in :mod:`tasks.runtime`. Left to the
garbage collector, their pooled sockets surface as ``ResourceWarning`` in whichever later test
happens to collect them, so ``filterwarnings = ["error"]`` would blame the wrong test.
:func:`closing_registry_clients` records every client constructed while a test runs and closes
them, and the process's cached clients, when the test ends (closing twice is harmless).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from d8mirror.registry import RegistryClient


@contextmanager
def closing_registry_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RegistryClient]]:
    """Within the block, every new :class:`RegistryClient` is recorded; all are closed at its
    end, with the clients cached by :mod:`tasks.runtime` (only if a test imported it)."""
    opened: list[RegistryClient] = []
    original = RegistryClient.__init__

    def recording_init(self: RegistryClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(RegistryClient, "__init__", recording_init)
    try:
        yield opened
    finally:
        monkeypatch.setattr(RegistryClient, "__init__", original)
        runtime = sys.modules.get("tasks.runtime")
        if runtime is not None:
            runtime.close_clients()
        for client in opened:
            client.close()
