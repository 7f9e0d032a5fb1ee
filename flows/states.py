"""Reading Prefect states for reports: shared by every flow."""

from __future__ import annotations

from typing import Any


def error_text(state: Any) -> str:
    """``Type: message`` of the exception a failed state holds, else the state's message."""
    try:
        state.result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(getattr(state, "message", "") or "failed")
