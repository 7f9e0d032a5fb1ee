"""The receipt-scan flow's parameters and its task: a thin wrapper over
:mod:`d8mirror.receipt_scan` (``d8mirror receipt REGISTRY -o PATH``). Prefect is imported by the
task only; the CLI builds :class:`ReceiptScanParameters` before Prefect loads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from d8mirror.names import DEFAULT_PACKAGES_PATH
from d8mirror.push.routing import Router, parse_target
from d8mirror.reference import Repository

from .registry_access import RegistryAccess


class ReceiptScanParameters(RegistryAccess):
    """Write the receipt of what a target registry holds for packages, by scanning it."""

    registry: str = Field(
        description="Target repository host[:port]/path, as given to push (a scheme is stripped)."
    )
    output: str = Field(
        description="Where to write receipt.json (+ .sha256); a directory: <dir>/receipt.json."
    )
    packages_path_suffix: str = Field(
        DEFAULT_PACKAGES_PATH,
        description="Where packages are under the target repository ('/' = the repository "
        "itself), as given to push.",
    )
    receipt_omit_host: bool = Field(
        False, description="Keep the registry host out of the receipt's root."
    )
    workers: int = Field(8, ge=1, le=64, description="Registry requests at once.")
    catalog: bool = Field(
        True,
        description="Find extra images in the registry's catalog (/v2/_catalog) when it serves "
        "one; False: from each main image's extra_images.json (reads its layers).",
    )

    def target(self) -> Repository:
        return parse_target(self.registry)

    def router(self) -> Router:
        return Router.from_suffixes(self.packages_path_suffix)

    def output_file(self) -> Path:
        from d8mirror.push.receipts import receipt_file

        return receipt_file(Path(self.output))
