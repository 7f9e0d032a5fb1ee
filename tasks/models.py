"""Typed parameters of the flows: pydantic models whose field descriptions make the Prefect UI
form readable. No credential is ever a field: fields name a Secret block or rely on the
environment (D8_MIRROR_* variables), see ``tasks.credentials``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from d8mirror.bundle import parse_size
from d8mirror.names import DEFAULT_PACKAGES_PATH, PACKAGES, VERSION, normalize_path_suffix
from d8mirror.pull.options import PullOptions
from d8mirror.reference import Repository
from d8mirror.versions import PackageFilter

from .registry_access import RegistryAccess
from .transfer_models import TransferTarget


class DeltaBase(BaseModel):
    """The verified local copy of a delta pull's base receipt and its SHA-256 (the key of
    the pull's caches: a delta never reuses a full pull's archives, nor the reverse)."""

    path: str
    sha256: str


class PullParameters(RegistryAccess):
    """Pull Deckhouse packages from a source registry into a bundle directory."""

    bundle_dir: str = Field(
        description="Directory that receives package-NAME.tar, "
        "package-versions.tar, checksums and report.json."
    )
    source: str = Field(
        "registry.deckhouse.ru/deckhouse/ee",
        description="Source repository (edition root), host[:port]/path.",
    )
    include_packages: list[str] = Field(
        default_factory=list,
        description="Whitelist NAME[@CONSTRAINT], e.g. console@~1.40.0 or console@=v1.2.3+stable.",
    )
    exclude_packages: list[str] = Field(
        default_factory=list, description="Blacklist of package names."
    )
    packages_path_suffix: str = Field(
        DEFAULT_PACKAGES_PATH, description="Packages path under the source repository."
    )
    no_packages: bool = Field(
        False, description="Skip per-package archives (package-versions.tar is still produced)."
    )
    only_extra_images: bool = Field(False, description="Pull only extra images.")
    skip_vex_images: bool = Field(False, description="Do not pull VEX (.att) attestations.")
    proxy_registry: bool = Field(
        False,
        description="Probe tags instead of listing them "
        "(for proxies without catalog/tag list APIs).",
    )
    dry_run: bool = Field(False, description="Plan only: read metadata, write no archive.")
    skip_space_check: bool = Field(
        False,
        description="Pull even when the sized download and archives do not fit the free "
        "disk space (the check runs before any blob is fetched; --force does not skip it).",
    )
    chunk_size: str = Field(
        "0",
        description="Split archives into chunks: decimal GB as in d8 "
        "(5) or with a unit (500MB, 1GiB); 0 = off.",
    )
    gost_digest: bool = Field(False, description="Also write GOST Streebog-256 .gostsum files.")
    verbose_summary: bool = Field(
        False,
        description="List every package with its versions in "
        "the end-of-pull summary (output only).",
    )
    tmp_dir: str | None = Field(
        None,
        description="Working dir and blob cache, kept across "
        "runs (default BUNDLE_DIR/.tmp, removed after a successful "
        "run).",
    )
    keep_runs: int = Field(
        0,
        ge=0,
        le=1000,
        description="With tmp_dir (a kept cache): after a successful run, keep the blobs, "
        "layouts and state of this run and of the N runs before it; everything else in the "
        "cache is removed (0: only what this run referenced). A failed run removes nothing.",
    )
    upload: TransferTarget | None = Field(
        None,
        description="Upload the finished bundle in the same run (s3:// or oci://); "
        "skipped for a dry-run, a cancelled or a failed pull.",
    )
    delta_from: str | None = Field(
        None,
        description="Build a delta bundle against this receipt of the target (what it already "
        "holds): a local receipt.json (its .sha256 beside it), s3://BUCKET/KEY/receipt.json or "
        "oci://REGISTRY/REPOSITORY:TAG. Its checksum is verified first; blobs it lists are "
        "neither downloaded nor packed, every manifest is (delta.json lists what was left "
        "out). A delta bundle is for d8mirror push only.",
    )
    delta_from_endpoint_url: str | None = Field(
        None, description="S3 endpoint of an s3:// delta_from (default: AWS)."
    )
    delta_from_insecure: bool = Field(
        False, description="Plain HTTP to the registry of an oci:// delta_from."
    )
    delta_base: SkipJsonSchema[DeltaBase | None] = Field(
        None, description="Set by the run from delta_from (not a form field)."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Packages pulled at the same time.")
    blob_workers: int = Field(4, ge=1, le=32, description="Blobs fetched at once per package.")
    concurrency_limits: bool = Field(
        False,
        description="Hold slots of the Prefect global concurrency limit "
        "'d8mirror-registry-HOST' (created by 'd8mirror setup') while talking to the source: "
        "a package fetch occupies blob_workers slots, so all runs together never open more "
        "than the limit's connections to one registry. When on, a missing limit is an error.",
    )

    def work_root(self) -> Path:
        return Path(self.tmp_dir) if self.tmp_dir else Path(self.bundle_dir) / ".tmp"

    def store_root(self) -> Path:
        return self.work_root() / "blobs"

    def package_work_dir(self, name: str) -> Path:
        return self.work_root() / PACKAGES / name

    def versions_work_dir(self, name: str) -> Path:
        return self.work_root() / "package-versions" / name / VERSION

    def receipt_dir(self) -> Path:
        """Where a remote ``delta_from`` is downloaded (a local one is read in place)."""
        return self.work_root() / "delta-base"

    def chunk_bytes(self) -> int:
        return parse_size(self.chunk_size)

    def repository(self) -> Repository:
        return Repository.parse(self.source)

    def options(self) -> PullOptions:
        return PullOptions(
            source=self.repository(),
            package_filter=PackageFilter.from_flags(self.include_packages, self.exclude_packages),
            packages_path=normalize_path_suffix(self.packages_path_suffix, PACKAGES),
            no_packages=self.no_packages,
            only_extra_images=self.only_extra_images,
            skip_vex_images=self.skip_vex_images,
            proxy_registry=self.proxy_registry,
            dry_run=self.dry_run,
        )


class MirrorPackageParameters(PullParameters):
    """(Re-)fetch one package into an existing bundle directory: writes package-NAME.tar only
    (package-versions.tar and the other archives are left alone)."""

    package: str = Field(
        description="The package to mirror, NAME[@CONSTRAINT] as in "
        "include_packages, e.g. console or console@~1.1.0."
    )
    describe_delta: SkipJsonSchema[bool] = Field(
        True,
        description="Merge a delta pull's omitted blobs into the bundle's delta.json (a "
        "scale-out parent writes it once for all its children instead).",
    )
    force_refetch: bool = Field(
        False,
        description="Ignore a cached fetch of the same content "
        "and pull the images again (blobs already in the shared store "
        "are still reused).",
    )
    include_packages: list[str] = Field(
        default_factory=list, description="Ignored: the package field selects it."
    )
    exclude_packages: list[str] = Field(
        default_factory=list, description="Ignored: the package field selects it."
    )

    @property
    def package_name(self) -> str:
        return self.package.partition("@")[0].strip()

    def pull_parameters(self) -> PullParameters:
        """The pull of just this package (same bundle dir, working dir and blob store)."""
        fields = self.model_dump(exclude={"package", "force_refetch", "describe_delta"})
        fields.update(include_packages=[self.package], exclude_packages=[])
        return PullParameters(**fields)


class ScaleOutParameters(PullParameters):
    """Pull like mirror-pull, but every package runs as its own flow run of a deployment, so
    workers on several machines share the work; bundle_dir (and tmp_dir) must be shared."""

    package_deployment: str = Field(
        "mirror-package/mirror-package",
        description="Deployment (FLOW/NAME) that pulls one package: a mirror-package flow "
        "deployed to a work pool whose workers see bundle_dir.",
    )
    child_timeout_seconds: int = Field(
        3600, ge=10, description="How long to wait for one package's flow run."
    )
