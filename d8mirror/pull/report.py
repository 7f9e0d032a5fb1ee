"""The outcome of a pull: summary text (spec §9.4), table rows and ``report.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.errors import wrap_os_error
from d8mirror.versions import sort_versions_desc

REPORT_FILE = "report.json"
_FRAME = 56
_LABEL = 11
_NAME = 30


@dataclass
class PackageOutcome:
    name: str
    status: str                      # "pulled" | "failed" | "empty" | "planned" | "cancelled"
    versions: list[str] = field(default_factory=list)
    images: int = 0
    vex: int = 0
    bytes_fetched: int = 0
    archive: str | None = None
    archive_bytes: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ArchiveStat:
    name: str
    size: int
    chunks: int = 0


@dataclass
class PullReport:
    source: str
    dry_run: bool = False
    packages: list[PackageOutcome] = field(default_factory=list)
    archives: list[ArchiveStat] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cancelled: bool = False
    elapsed_seconds: float = 0.0
    packages_skipped: bool = False

    @property
    def failed(self) -> list[str]:
        return [p.name for p in self.packages if p.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["failed"] = self.failed
        doc["status"] = ("cancelled" if self.cancelled else "completed" if self.ok else "failed")
        return doc

    def write(self, bundle_dir: Path) -> Path:
        """Write ``report.json`` atomically into the bundle dir."""
        path = bundle_dir / REPORT_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise wrap_os_error(exc, str(path)) from exc
        return path

    def table_rows(self) -> list[dict[str, Any]]:
        return [{"package": p.name, "versions": ", ".join(sort_versions_desc(p.versions)),
                 "images": p.images, "bytes": p.archive_bytes, "status": p.status,
                 "error": p.error or ""} for p in self.packages]


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render_summary(report: PullReport, *, verbose: bool = True) -> str:
    """The framed summary printed at the end of a pull (and published as an artifact)."""
    title = ("Pull plan (dry-run)" if report.dry_run else
             "Pull failed" if not report.ok else "Pull summary")
    lines = [f"{'Source:':<{_LABEL}} {report.source}"]
    if report.packages_skipped:
        lines.append(f"{'Packages:':<{_LABEL}} skipped")
    else:
        counted = [p for p in report.packages
                   if p.status in ("pulled", "planned") or (p.images and p.status != "failed")]
        vex = sum(p.vex for p in report.packages)
        head = f"{'Packages:':<{_LABEL}} {len(counted)}"
        if vex:
            head += f"  ·  {vex} VEXes"
        lines.append(head)
        if verbose:
            for p in report.packages:
                versions = ", ".join(sort_versions_desc(p.versions))
                vex_note = f"({p.vex} VEX)  " if p.vex else ""
                state = "" if p.status in ("pulled", "planned") else f"  {p.status}"
                lines.append(f"    {p.name:<{_NAME}} {vex_note}[{versions}]{state}")
    if not report.dry_run and report.archives:
        lines += ["", f"Bundle artifacts ({len(report.archives)} files)"]
        for a in report.archives:
            chunks = f" ({a.chunks} chunks)" if a.chunks else ""
            lines.append(f"  {a.name + chunks:<{_NAME}}  {human_size(a.size)}")
        lines.append(f"  {'TOTAL':<{_NAME}}  {human_size(sum(a.size for a in report.archives))}")
    lines.append("")
    if report.dry_run:
        lines.append("No images were downloaded (dry-run).")
    elif report.cancelled:
        lines.append("Pull was cancelled; completed packages were packed.")
    elif report.failed:
        lines.append(f"Pull failed; failed packages: {', '.join(report.failed)}")
        for p in report.packages:
            if p.error:
                lines.append(f"  {p.name}: {p.error}")
    else:
        lines.append("Pull completed.")
    lines.append(f"Elapsed: {_elapsed(report.elapsed_seconds)}")
    bar = "═" * (_FRAME - len(title) - 5)
    return "\n".join([f"╔══ {title} {bar}", *[f"║ {line}" for line in lines], "╚" + "═" * _FRAME])
