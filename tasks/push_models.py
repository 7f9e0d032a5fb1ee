"""The parameters of mirror-push (Prefect-free: the CLI builds them before Prefect loads)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from d8mirror.bundle import discover_archives
from d8mirror.names import DEFAULT_MODULES_PATH, DEFAULT_PACKAGES_PATH
from d8mirror.push.routing import Router, parse_target
from d8mirror.push.unified import default_tmp_dir
from d8mirror.reference import Repository

from .registry_access import RegistryAccess


class PushParameters(RegistryAccess):
    """Push bundle archives into a (usually air-gapped) registry."""

    bundle_dir: str | None = Field(
        None,
        description="Bundle directory (every *.tar and chunk "
        "set in it is pushed), or a single archive.",
    )
    files: list[str] = Field(
        default_factory=list, description="Extra archive files to push (like --file)."
    )
    registry: str = Field(
        description="Target repository host[:port]/path, e.g. "
        "registry.local:5000/deckhouse/ee (a scheme is stripped)."
    )
    packages_path_suffix: str = Field(
        DEFAULT_PACKAGES_PATH,
        description="Where packages go under the target repository ('/' = the repository itself).",
    )
    modules_path_suffix: str = Field(
        DEFAULT_MODULES_PATH,
        description="Where modules go under the target repository ('/' = the repository itself).",
    )
    tmp_dir: str | None = Field(
        None,
        description="Working dir for the unpacked tree "
        "(default <bundle>/.tmp/mirror); only what push creates in it "
        "is removed.",
    )
    dry_run: bool = Field(
        False,
        description="Say what would be uploaded and what the target already has (HEAD "
        "requests only); write nothing to the target.",
    )
    # STAND-IN (helper "import"): the "receipt" helper owns these three fields.
    receipt_in: str | None = Field(
        None, description="The site's previous receipt (what the target held before this push)."
    )
    receipt_out: str | None = Field(
        None, description="Write the receipt here after the post-push verification passes."
    )
    receipt_omit_host: bool = Field(
        False, description="Keep the target registry's host out of the receipt's root."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Layouts pushed at once.")
    blob_workers: int = Field(4, ge=1, le=64, description="Blobs at once per layout.")

    def target(self) -> Repository:
        return parse_target(self.registry)

    def router(self) -> Router:
        return Router.from_suffixes(self.packages_path_suffix, self.modules_path_suffix)

    def archives(self) -> list[Path]:
        bundle = Path(self.bundle_dir) if self.bundle_dir else None
        return discover_archives(bundle, [Path(f) for f in self.files])

    def tmp_path(self, archives: list[Path]) -> Path:
        if self.tmp_dir:
            return Path(self.tmp_dir)
        bundle = Path(self.bundle_dir) if self.bundle_dir else None
        return default_tmp_dir(bundle, archives)
