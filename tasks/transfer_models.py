"""Typed parameters and results of the transfer flows. No credential is ever a field: S3 keys
come from the standard AWS chain (environment, profile, instance role) or a named Prefect
Secret block; registry credentials from D8_MIRROR_REGISTRY_LOGIN/PASSWORD, docker config, or a
block.

What crosses the Prefect boundary between the transfer's tasks and flows is one of these
models (Prefect stores them as JSON and the UI shows them typed):

    TransferFile      one file of the transfer manifest (name, size, SHA-256, GOST)
    TransferFiles     the transfer manifest as passed from task to task
    FileOutcome       what happened to one file (uploaded, skipped, downloaded, resumed, present)
    FileRow           one row of the summary table (an outcome, or a failure and its error)
    TransferSummary   the result of upload-bundle / download-bundle
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from d8mirror.transfer import (
    FileEntry,
    FileResult,
    TransferManifest,
    TransferUrl,
    parse_transfer_url,
)
from d8mirror.transfer.oci_artifact import DEFAULT_CHUNK
from d8mirror.transfer.results import Status
from d8mirror.transfer.s3 import MiB, S3Settings
from d8mirror.units import human_rate, human_seconds, human_size_exact

from .registry_access import RegistryAccess


class TransferAccess(RegistryAccess):
    """How to reach object storage or an intermediate registry (everything but the URL)."""

    endpoint_url: str | None = Field(
        None, description="S3 endpoint of an S3-compatible store (MinIO, Ceph RGW…); default: AWS."
    )
    region: str | None = Field(None, description="S3 region (default: from the AWS config).")
    part_size_mib: int = Field(
        64, ge=5, le=5120, description="S3 multipart part size and OCI upload chunk size, MiB."
    )
    concurrency: int = Field(4, ge=1, le=64, description="S3 parts in flight per file.")
    file_concurrency: int = Field(2, ge=1, le=16, description="Files transferred at once.")

    def s3_settings(self) -> S3Settings:
        verify: bool | str = self.ca_file or True
        if self.tls_skip_verify:
            verify = False
        return S3Settings(
            endpoint_url=self.endpoint_url,
            region=self.region,
            verify_tls=verify,
            part_size=self.part_size_mib * MiB,
            concurrency=self.concurrency,
        )

    def chunk_bytes(self) -> int:
        return self.part_size_mib * MiB if self.part_size_mib else DEFAULT_CHUNK


class TransferTarget(TransferAccess):
    """Where the bundle goes (or comes from) and how to reach it."""

    url: str = Field(description="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPOSITORY:TAG.")

    def target(self) -> TransferUrl:
        return parse_transfer_url(self.url)


class UploadParameters(TransferTarget):
    """Upload a bundle directory into object storage or an intermediate registry."""

    bundle_dir: str = Field(
        description="Bundle directory (package-*.tar, chunks, sidecars, report.json)."
    )


class DownloadParameters(TransferTarget):
    """Download a bundle uploaded by upload-bundle, verifying every file."""

    dest_dir: str = Field(description="Directory that receives the files (created if missing).")


# -- what the tasks pass to each other and return ------------------------------------------------
_SHA256 = r"^[0-9a-f]{64}$"


class TransferFile(BaseModel, frozen=True):
    """One file of the transfer manifest."""

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256)
    gost: str | None = Field(None, pattern=_SHA256)

    @classmethod
    def of(cls, entry: FileEntry) -> TransferFile:
        return cls(name=entry.name, size=entry.size, sha256=entry.sha256, gost=entry.gost)

    def entry(self) -> FileEntry:
        return FileEntry(self.name, self.size, self.sha256, self.gost)


class TransferFiles(BaseModel, frozen=True):
    """The transfer manifest as passed between tasks: every file, sorted by name."""

    files: list[TransferFile]

    @classmethod
    def of(cls, manifest: TransferManifest) -> TransferFiles:
        return cls(files=[TransferFile.of(entry) for entry in manifest.files])

    def manifest(self) -> TransferManifest:
        return TransferManifest(tuple(f.entry() for f in self.files))


class FileOutcome(BaseModel, frozen=True):
    """What happened to one file of a transfer."""

    name: str
    size: int
    status: Status
    seconds: float

    @classmethod
    def of(cls, result: FileResult) -> FileOutcome:
        return cls(name=result.name, size=result.size, status=result.status, seconds=result.seconds)


RowStatus = Literal[Status, "failed"]
#: Statuses of files whose bytes crossed the wire in this run.
MOVED: frozenset[str] = frozenset({"uploaded", "downloaded", "resumed"})


class FileRow(BaseModel, frozen=True):
    """One row of a transfer's summary table."""

    name: str
    size: int
    status: RowStatus
    seconds: float
    error: str = ""

    @classmethod
    def done(cls, outcome: FileOutcome) -> FileRow:
        return cls(
            name=outcome.name,
            size=outcome.size,
            status=outcome.status,
            seconds=round(outcome.seconds, 3),
        )

    @classmethod
    def failed(cls, file: TransferFile, error: str) -> FileRow:
        return cls(name=file.name, size=file.size, status="failed", seconds=0.0, error=error)

    def table_row(self) -> dict[str, str]:
        """As the summary table shows it: size human beside exact bytes, time, rate."""
        moved = self.status in MOVED and self.seconds > 0
        return {
            "name": self.name,
            "status": self.status,
            "size": human_size_exact(self.size),
            "time": "" if self.status == "failed" else human_seconds(self.seconds),
            "rate": human_rate(self.size / self.seconds) if moved else "",
            "error": self.error,
        }


class TransferSummary(BaseModel):
    """The result of an upload-bundle or download-bundle run."""

    verb: Literal["upload", "download"]
    url: str
    files: int
    bytes: int
    bytes_moved: int
    statuses: dict[str, int]
    failed: list[str]
    seconds: float
    mib_per_second: float | None
    digest: str | None = Field(None, description="OCI: the artifact's manifest digest.")

    @classmethod
    def of(
        cls, verb: Literal["upload", "download"], url: str, rows: list[FileRow], elapsed: float
    ) -> TransferSummary:
        moved = sum(r.size for r in rows if r.status in MOVED)
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        return cls(
            verb=verb,
            url=url,
            files=len(rows),
            bytes=sum(r.size for r in rows),
            bytes_moved=moved,
            statuses=statuses,
            failed=[r.name for r in rows if r.status == "failed"],
            seconds=round(elapsed, 3),
            mib_per_second=round(moved / (1 << 20) / elapsed, 1) if elapsed else None,
        )
