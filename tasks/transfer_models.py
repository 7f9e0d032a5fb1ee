"""Typed parameters of the transfer flows. No credential is ever a field: S3 keys come from the
standard AWS chain (environment, profile, instance role) or a named Prefect Secret block;
registry credentials from D8_MIRROR_REGISTRY_LOGIN/PASSWORD, docker config, or a block."""

from __future__ import annotations

from pydantic import Field

from d8mirror.transfer import TransferUrl, parse_transfer_url
from d8mirror.transfer.oci_artifact import DEFAULT_CHUNK
from d8mirror.transfer.s3 import MiB, S3Settings

from .registry_access import RegistryAccess


class TransferTarget(RegistryAccess):
    """Where the bundle goes (or comes from) and how to reach it."""

    url: str = Field(description="s3://BUCKET[/PREFIX] or oci://REGISTRY/REPOSITORY:TAG.")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint of an S3-compatible store (MinIO, Ceph RGW…); "
        "default: AWS.")
    region: str | None = Field(None, description="S3 region (default: from the AWS config).")
    part_size_mib: int = Field(64, ge=5, le=5120, description="S3 multipart part size and OCI "
                               "upload chunk size, MiB.")
    concurrency: int = Field(4, ge=1, le=64, description="S3 parts in flight per file.")
    file_concurrency: int = Field(2, ge=1, le=16, description="Files transferred at once.")

    def target(self) -> TransferUrl:
        return parse_transfer_url(self.url)

    def s3_settings(self) -> S3Settings:
        verify: bool | str = self.ca_file or True
        if self.tls_skip_verify:
            verify = False
        return S3Settings(endpoint_url=self.endpoint_url, region=self.region, verify_tls=verify,
                          part_size=self.part_size_mib * MiB, concurrency=self.concurrency)

    def chunk_bytes(self) -> int:
        return self.part_size_mib * MiB if self.part_size_mib else DEFAULT_CHUNK


class UploadParameters(TransferTarget):
    """Upload a bundle directory into object storage or an intermediate registry."""

    bundle_dir: str = Field(description="Bundle directory (package-*.tar, chunks, sidecars, "
                            "report.json).")


class DownloadParameters(TransferTarget):
    """Download a bundle uploaded by upload-bundle, verifying every file."""

    dest_dir: str = Field(description="Directory that receives the files (created if missing).")
