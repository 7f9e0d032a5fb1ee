"""The parameters and results of import-bundle (Prefect-free: the CLI builds them before Prefect
loads). No credential is a field: the target's come from a Secret block, the CLI's flags or
D8_MIRROR_REGISTRY_*; the source store's from the AWS chain or a Secret block
(``source_access.credentials_block``).

    ImportParameters   what to import (a directory, s3://, oci://), where, and the receipt
    Upload             one complete upload (or bundle directory) found at the source
    ImportedBundle     what became of one upload: imported, skipped, failed, incomplete…
    ImportResult       the result of an import-bundle run
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from d8mirror.names import DEFAULT_MODULES_PATH, DEFAULT_PACKAGES_PATH
from d8mirror.push.summary import PushResult
from d8mirror.units import human_seconds, human_size_exact

from .push_models import PushParameters
from .registry_access import RegistryAccess
from .transfer_models import TransferAccess

DOWNLOADS_DIR = "incoming"


class ImportParameters(RegistryAccess):
    """Import bundles into the air-gapped registry: download (verified), push, verify, receipt.
    The TLS and credentials fields are the target registry's; the source store's are in
    ``source_access``."""

    source: str = Field(
        description="A bundle directory; a directory of bundles (one per subdirectory); "
        "s3://BUCKET/PREFIX holding one upload, or one upload per sub-prefix (each night's "
        "delta under its id); or oci://REGISTRY/REPOSITORY:TAG (one upload)."
    )
    registry: str = Field(
        description="Target repository host[:port]/path, e.g. registry.local:5000/deckhouse/ee."
    )
    receipt: str = Field(
        description="The site's receipt (receipt.json; its .sha256 beside it). Bundles it lists "
        "are skipped; it is rewritten after each bundle pushed and verified. Missing: nothing "
        "was imported yet."
    )
    receipt_upload_to: str | None = Field(
        None,
        description="Upload the receipt here after the import (s3://BUCKET/PREFIX[/receipt.json] "
        "or oci://REGISTRY/REPOSITORY:TAG), reached with source_access.",
    )
    receipt_omit_host: bool = Field(
        False, description="Keep the target registry's host out of the receipt."
    )
    source_access: TransferAccess = Field(
        default_factory=TransferAccess,
        description="How to reach an s3:// or oci:// source and receipt_upload_to: endpoint, "
        "region, TLS, Secret block.",
    )
    download_dir: str | None = Field(
        None,
        description="Where s3:// and oci:// uploads are downloaded, one subdirectory each "
        f"(default: <receipt dir>/{DOWNLOADS_DIR}).",
    )
    keep_downloads: bool = Field(
        False, description="Keep a downloaded bundle after its import (default: removed)."
    )
    packages_path_suffix: str = Field(
        DEFAULT_PACKAGES_PATH,
        description="Where packages go under the target repository ('/' = the repository itself).",
    )
    modules_path_suffix: str = Field(
        DEFAULT_MODULES_PATH,
        description="Where modules go under the target repository ('/' = the repository itself).",
    )
    concurrency: int = Field(4, ge=1, le=64, description="Layouts pushed at once.")
    blob_workers: int = Field(4, ge=1, le=64, description="Blobs at once per layout.")

    def receipt_path(self) -> Path:
        return Path(self.receipt)

    def downloads(self) -> Path:
        if self.download_dir:
            return Path(self.download_dir)
        return self.receipt_path().parent / DOWNLOADS_DIR

    def push_parameters(self, bundle_dir: Path) -> PushParameters:
        """The push of one bundle: the site's receipt in, the next one out (same path)."""
        receipt = self.receipt_path()
        return PushParameters(
            bundle_dir=str(bundle_dir),
            registry=self.registry,
            packages_path_suffix=self.packages_path_suffix,
            modules_path_suffix=self.modules_path_suffix,
            concurrency=self.concurrency,
            blob_workers=self.blob_workers,
            receipt_in=str(receipt) if receipt.is_file() else None,
            receipt_out=str(receipt),
            receipt_omit_host=self.receipt_omit_host,
            insecure=self.insecure,
            tls_skip_verify=self.tls_skip_verify,
            ca_file=self.ca_file,
            credentials_block=self.credentials_block,
        )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Upload(BaseModel, frozen=True):
    """One bundle found at the source: a directory, or a complete upload to download."""

    name: str = Field(description="Its name at the source (the sub-prefix: the bundle's id).")
    location: str = Field(description="Its directory, or its s3:// / oci:// URL.")
    remote: bool = Field(description="Downloaded first (s3://, oci://).")
    complete: bool = Field(True, description="False: an upload without its transfer manifest.")

    def local_name(self) -> str:
        """A safe directory name for its download."""
        return _UNSAFE.sub("_", self.name).strip("._") or "bundle"


ImportStatus = Literal["imported", "skipped", "failed", "incomplete", "not started"]


class ImportedBundle(BaseModel):
    """What became of one upload."""

    name: str
    location: str
    status: ImportStatus
    bundle_id: str = ""
    layouts: int = 0
    tags: int = 0
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    seconds: float = 0.0
    error: str = ""

    @classmethod
    def of(
        cls, upload: Upload, status: ImportStatus, *, bundle_id: str = "", error: str = ""
    ) -> ImportedBundle:
        return cls(
            name=upload.name,
            location=upload.location,
            status=status,
            bundle_id=bundle_id,
            error=error,
        )

    @classmethod
    def pushed(
        cls, upload: Upload, bundle_id: str, result: PushResult, seconds: float
    ) -> ImportedBundle:
        layouts = result.layouts
        return cls(
            name=upload.name,
            location=upload.location,
            status="imported",
            bundle_id=bundle_id,
            layouts=len(layouts),
            tags=sum(len(r.tags) for r in layouts),
            bytes_uploaded=sum(r.bytes_uploaded for r in layouts),
            blobs_uploaded=sum(r.blobs_uploaded for r in layouts),
            blobs_present=sum(r.blobs_present for r in layouts),
            blobs_mounted=sum(r.blobs_mounted for r in layouts),
            seconds=round(seconds, 3),
        )

    def table_row(self) -> dict[str, str | int]:
        return {
            "upload": self.name,
            "status": self.status,
            "bundle id": self.bundle_id,
            "layouts": self.layouts,
            "tags": self.tags,
            "uploaded": human_size_exact(self.bytes_uploaded) if self.layouts else "",
            "blobs uploaded / present / mounted": (
                f"{self.blobs_uploaded} / {self.blobs_present} / {self.blobs_mounted}"
                if self.layouts
                else ""
            ),
            "time": human_seconds(self.seconds) if self.seconds else "",
            "error": self.error,
        }


class ImportResult(BaseModel):
    """The result of an import-bundle run."""

    source: str
    registry: str
    receipt: str
    bundles: list[ImportedBundle] = Field(default_factory=list)
    receipt_uploaded_to: str | None = None
    seconds: float = 0.0

    def count(self, status: ImportStatus) -> int:
        return sum(1 for b in self.bundles if b.status == status)

    @property
    def failed(self) -> list[ImportedBundle]:
        return [b for b in self.bundles if b.status == "failed"]

    def counts(self) -> dict[str, int]:
        statuses: dict[str, int] = {}
        for bundle in self.bundles:
            statuses[bundle.status] = statuses.get(bundle.status, 0) + 1
        return statuses
