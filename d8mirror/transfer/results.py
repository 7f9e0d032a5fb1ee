"""What happened to one file of a transfer: small, JSON-able, the same for S3 and OCI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["uploaded", "skipped", "downloaded", "resumed", "present"]


@dataclass(frozen=True)
class FileResult:
    name: str
    size: int
    status: Status
    seconds: float
