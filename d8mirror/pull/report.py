"""The outcome of a pull: summary text (R-9.4), table rows and ``report.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from d8mirror.bundle.checksums import KnownDigest
from d8mirror.files import write_atomic
from d8mirror.pull.sizing import SizingSummary
from d8mirror.units import human_seconds, human_size, human_size_exact
from d8mirror.versions import sort_versions_desc

REPORT_FILE = "report.json"
_FRAME = 56
_LABEL = 11
_NAME = 30
_SIZE = 10
#: Editions d8 recognises as the last path segment of ``--source`` (summary ``Edition:`` line).
EDITIONS = ("ee", "fe", "se", "se-plus", "be", "ce")


def edition_of(source: str) -> str:
    """The edition ``source`` names (``…/deckhouse/ee`` → ``ee``), or "" for a custom path."""
    last = source.rstrip("/").rsplit("/", 1)[-1]
    return last if last in EDITIONS else ""


PackageStatus = Literal["pulled", "failed", "empty", "planned", "cancelled"]


class PackageOutcome(BaseModel):
    """How one package of a pull ended (a row of the report)."""

    name: str
    status: PackageStatus
    versions: list[str] = Field(default_factory=list)
    images: int = 0
    vex: int = 0
    bytes_fetched: int = 0
    blobs_fetched: int = Field(0, description="Blobs downloaded by this package's fetch.")
    blobs_reused: int = Field(0, description="Blobs the blob store already held.")
    seconds: float | None = Field(
        None, description="From its fetch's start to the end of its pack (None: not measured)."
    )
    archive: str | None = None
    archive_bytes: int = 0
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    #: GOST digests computed while packing its archive, by file name (not reported).
    gost_known: dict[str, KnownDigest] = Field(default_factory=dict, exclude=True)


class ArchiveStat(BaseModel):
    """One archive of the bundle dir (chunks: how many files it was split into, 0: none)."""

    name: str
    size: int
    chunks: int = 0


class DeltaSummary(BaseModel):
    """A delta bundle's section of the report: what it left out against its base receipt."""

    delta_id: str
    base_receipt_sha256: str
    blobs_omitted: int = Field(description="Blobs the target holds, left out of the archives.")
    bytes_omitted: int
    bytes_shipped: int = Field(0, description="The bundle's archives.")
    metadata_blobs_read: int = Field(
        0,
        description="Of the omitted blobs, those downloaded anyway to read a file from them "
        "(version.json, images_digests.json, extra_images.json) and still not packed.",
    )
    metadata_bytes_read: int = 0


class PullReport(BaseModel):
    """The outcome of a pull: ``report.json``, the summary and the flow's result."""

    source: str
    dry_run: bool = False
    packages: list[PackageOutcome] = Field(default_factory=list)
    archives: list[ArchiveStat] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    cancelled: bool = False
    elapsed_seconds: float = 0.0
    packages_skipped: bool = False
    edition: str = ""
    only_extra_images: bool = False
    errors: list[str] = Field(default_factory=list, description="Of the run itself (GOST digests).")
    sizing: SizingSummary | None = Field(
        None, description="What the pull was sized at before fetching (manifests only)."
    )
    delta: DeltaSummary | None = Field(
        None, description="A delta bundle's omitted vs shipped bytes (None: a full bundle)."
    )
    #: GOST digests computed while packing package-versions.tar (not reported).
    gost_known: dict[str, KnownDigest] = Field(default_factory=dict, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> list[str]:
        return [p.name for p in self.packages if p.status == "failed"]

    def gost_digests(self) -> dict[str, KnownDigest]:
        """Every GOST digest this run computed while packing, by file name."""
        known = dict(self.gost_known)
        for package in self.packages:
            known.update(package.gost_known)
        return known

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["cancelled", "completed", "failed"]:
        return "cancelled" if self.cancelled else "completed" if self.ok else "failed"

    def write(self, bundle_dir: Path) -> Path:
        """Write ``report.json`` atomically into the bundle dir, through a temporary file of a
        new unique name (created exclusively: a symlink planted in the bundle dir is never
        followed, so nothing outside it is overwritten)."""
        path = bundle_dir / REPORT_FILE
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        write_atomic(path, text.encode("utf-8"))
        return path

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per package as a person reads it, what matters first (the table scrolls
        sideways): status, duration, sizes human beside exact bytes, blobs downloaded apart
        from those the store already held."""
        return [
            {
                "package": p.name,
                "status": p.status,
                "time": "" if p.seconds is None else human_seconds(p.seconds),
                "archive": human_size_exact(p.archive_bytes),
                "downloaded": human_size_exact(p.bytes_fetched),
                "blobs fetched": p.blobs_fetched,
                "blobs reused": p.blobs_reused,
                "images": p.images,
                "versions": ", ".join(sort_versions_desc(p.versions)),
                "error": p.error or "",
            }
            for p in self.packages
        ]


def _elapsed(seconds: float) -> str:
    """As Go prints a duration rounded to the second: ``22s``, ``3m5s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms" if seconds > 0 else "0s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _package_lines(report: PullReport, verbose: bool) -> list[str]:
    """``Packages:   N  ·  extra images only  ·  M VEXes``, then (verbose) one line per
    package as d8 prints it: name, ``(n VEX)``, ``[versions newest first]``."""
    if report.packages_skipped:
        return [f"{'Packages:':<{_LABEL}} skipped"]
    counted = [
        p
        for p in report.packages
        if p.status in ("pulled", "planned") or (p.images and p.status != "failed")
    ]
    parts = [str(len(counted))]
    if report.only_extra_images:
        parts.append("extra images only")
    if vex := sum(p.vex for p in report.packages):
        parts.append(f"{vex} VEXes")
    lines = [f"{'Packages:':<{_LABEL}} {'  ·  '.join(parts)}"]
    if not verbose:
        return lines
    for p in report.packages:
        tail = f"  ({p.vex} VEX)" if p.vex else ""
        if p.versions:
            tail += f"  [{', '.join(sort_versions_desc(p.versions))}]"
        if p.status not in ("pulled", "planned"):
            tail += f"  {p.status}"
        lines.append(f"    {p.name:<{_NAME}}{tail}" if tail else f"    {p.name}")
    return lines


def _bundle_lines(report: PullReport) -> list[str]:
    """d8's bundle block: physical files counted (every chunk), sizes right-aligned."""
    files = sum(a.chunks or 1 for a in report.archives)
    lines = ["", f"Bundle artifacts ({files} files)"]
    for a in report.archives:
        chunks = f"  ({a.chunks} chunks)" if a.chunks else ""
        lines.append(f"  {a.name:<{_NAME}} {human_size(a.size):>{_SIZE}}{chunks}")
    total = human_size(sum(a.size for a in report.archives))
    lines.append(f"  {'TOTAL':<{_NAME}} {total:>{_SIZE}}")
    return lines


def _delta_lines(delta: DeltaSummary) -> list[str]:
    """A delta bundle's lines: its id, its base, bytes left out vs shipped."""
    lines = [
        "",
        f"Delta bundle {delta.delta_id}",
        f"  base receipt sha256:{delta.base_receipt_sha256}",
        f"  {'omitted (target has them)':<{_NAME}} {human_size(delta.bytes_omitted):>{_SIZE}}"
        f"  ({delta.blobs_omitted} blobs)",
        f"  {'shipped (archives)':<{_NAME}} {human_size(delta.bytes_shipped):>{_SIZE}}",
    ]
    if delta.metadata_blobs_read:
        lines.append(
            f"  {delta.metadata_blobs_read} omitted blobs "
            f"({human_size(delta.metadata_bytes_read)}) were downloaded to read metadata, "
            "not packed"
        )
    return lines


def render_summary(report: PullReport, *, verbose: bool = True) -> str:
    """The framed summary printed at the end of a pull (and published as an artifact);
    per-package lines only when ``verbose`` (d8's ``--verbose-summary``)."""
    title = (
        "Pull plan (dry-run)"
        if report.dry_run
        else "Pull failed"
        if not report.ok
        else "Pull summary (delta bundle)"
        if report.delta is not None
        else "Pull summary"
    )
    lines = [f"{'Edition:':<{_LABEL}} {report.edition.upper()}"] if report.edition else []
    lines.append(f"{'Source:':<{_LABEL}} {report.source}")
    lines += _package_lines(report, verbose)
    if not report.dry_run and report.archives:
        lines += _bundle_lines(report)
    if not report.dry_run and report.delta is not None:
        lines += _delta_lines(report.delta)
    lines.append("")
    if report.dry_run:
        lines.append("No images were downloaded (dry-run).")
    elif report.cancelled:
        lines.append("Pull was cancelled; completed packages were packed.")
    elif not report.ok:
        if report.failed:
            lines.append(f"Pull failed; failed packages: {', '.join(report.failed)}")
        for p in report.packages:
            if p.error:
                lines.append(f"  {p.name}: {p.error}")
        lines += [f"Pull failed; {error}" for error in report.errors]
    else:
        lines.append("Pull completed.")
    lines.append(f"Elapsed: {_elapsed(report.elapsed_seconds)}")
    bar = "═" * (_FRAME - len(title) - 5)
    return "\n".join(
        [
            f"╔══ {title} {bar}",
            *[f"║ {line}" if line else "║" for line in lines],
            "╚" + "═" * (_FRAME - 1),
        ]
    )
