"""What happened to one file of a transfer: small, JSON-able, the same for S3 and OCI."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["uploaded", "skipped", "downloaded", "resumed", "present"]


@dataclass(frozen=True)
class FileResult:
    name: str
    size: int
    status: Status
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FileResult:
        return cls(str(obj["name"]), int(obj["size"]), obj["status"], float(obj["seconds"]))
