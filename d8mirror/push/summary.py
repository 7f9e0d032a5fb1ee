"""The push outcome: a JSON-able :class:`PushResult` and the framed summary text (R-9.4)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from d8mirror.push.discovery_tags import DiscoveryTag
from d8mirror.push.pusher import LayoutPushResult
from d8mirror.push.unified import UnpackResult
from d8mirror.push.verify import Mismatch
from d8mirror.units import human_seconds, human_size, human_size_exact

_FRAME = 56
_LABEL = 11
PLATFORM_LAYOUTS = frozenset({"", "install", "install-standalone", "release-channel"})


class LayoutFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    layout: str
    repository: str
    error: str


class PushResult(BaseModel):
    """The outcome of a push: what mirror-push returns (summary: :func:`render_push_summary`)."""

    model_config = ConfigDict(frozen=True)

    target: str
    unpack: UnpackResult | None = None
    layouts: tuple[LayoutPushResult, ...] = ()
    failures: tuple[LayoutFailure, ...] = ()
    discovery: tuple[DiscoveryTag, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    error: str | None = None
    cancelled: bool = False
    elapsed_seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    withheld: tuple[DiscoveryTag, ...] = Field(
        (), description="Discovery tags of items that did not land."
    )
    not_started: tuple[str, ...] = Field((), description="Layouts a cancel left unpushed.")
    # STAND-IN (helper "import"): the "receipt" helper owns these two fields.
    bundle_id: str = Field("", description="The id of the bundle pushed.")
    receipt: str | None = Field(None, description="The receipt written (its path).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not (self.failures or self.mismatches or self.error) or self.cancelled

    @property
    def failed_layouts(self) -> list[str]:
        return [f.layout or "/" for f in self.failures]

    def count(self, kind: str) -> int:
        return sum(1 for d in self.discovery if d.kind == kind)

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per layout as a person reads it, what matters first: status, duration,
        bytes uploaded (human beside exact), blobs uploaded apart from those the target
        already held or mounted from another repository, tags, repository, error."""
        rows = [
            {
                "layout": r.layout or "/",
                "status": "pushed",
                "time": "" if r.seconds is None else human_seconds(r.seconds),
                "uploaded": human_size_exact(r.bytes_uploaded),
                "blobs uploaded": r.blobs_uploaded,
                "blobs present": r.blobs_present,
                "blobs mounted": r.blobs_mounted,
                "tags": len(r.tags),
                "repository": r.repository,
                "error": "",
            }
            for r in self.layouts
        ]
        rows += [
            {
                "layout": f.layout or "/",
                "status": "failed",
                "time": "",
                "uploaded": "",
                "blobs uploaded": 0,
                "blobs present": 0,
                "blobs mounted": 0,
                "tags": 0,
                "repository": f.repository,
                "error": f.error,
            }
            for f in self.failures
        ]
        return sorted(rows, key=lambda r: str(r["layout"]))


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _line(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL}} {value}"


def _count_or_absent(n: int, unit: str = "") -> str:
    return f"{n}{unit}" if n else "not present"


def render_push_summary(result: PushResult) -> str:
    """The framed push summary (one log record)."""
    title = "Push failed" if not result.ok else "Push summary"
    pushed = [r.layout for r in result.layouts]
    platform = any(p in PLATFORM_LAYOUTS for p in pushed)
    security = sum(1 for p in pushed if p.startswith("security/"))
    uploaded = sum(r.blobs_uploaded for r in result.layouts)
    lines = [
        _line("Registry", result.target),
        _line("Platform", "pushed" if platform else "not present"),
        _line("Installer", "pushed" if "installer" in pushed else "not present"),
        _line("Security", _count_or_absent(security, " databases")),
        _line("Modules", _count_or_absent(result.count("modules"))),
        _line("Packages", _count_or_absent(result.count("packages"))),
        _line("Plugins", _count_or_absent(result.count("plugins"))),
        _line(
            "Images",
            f"{sum(len(r.tags) for r in result.layouts)} tags in {len(result.layouts)} layouts",
        ),
        _line(
            "Blobs",
            f"{uploaded} uploaded "
            f"({human_size(sum(r.bytes_uploaded for r in result.layouts))}), "
            f"{sum(r.blobs_mounted for r in result.layouts)} mounted, "
            f"{sum(r.blobs_present for r in result.layouts)} already present",
        ),
        "",
    ]
    lines += _state_lines(result)
    lines.append(f"Elapsed: {_elapsed(result.elapsed_seconds)}")
    bar = "═" * (_FRAME - len(title) - 5)
    return "\n".join([f"╔══ {title} {bar}", *[f"║ {line}" for line in lines], "╚" + "═" * _FRAME])


def _withheld_lines(result: PushResult) -> list[str]:
    if not result.withheld:
        return []
    names = ", ".join(f"{d.kind}:{d.tag}" for d in result.withheld)
    return [f"Discovery tags withheld (item incomplete; rerun the push): {names}"]


def _state_lines(result: PushResult) -> list[str]:
    if result.cancelled:
        lines = ["Push was cancelled; layouts pushed so far stay in the registry."]
        if result.not_started:
            lines.append(
                f"Not pushed ({len(result.not_started)} layouts): "
                f"{', '.join(r or '/' for r in result.not_started)}"
            )
        return lines + _withheld_lines(result) + ["Rerun the push to complete it."]
    if result.ok:
        return ["Push completed."]
    lines = []
    if result.error:
        lines.append(f"Push failed: {result.error}")
    if result.failures:
        lines.append(f"Push failed; failed layouts: {', '.join(result.failed_layouts)}")
        lines += [f"  {f.layout or '/'}: {f.error}" for f in result.failures]
    if result.mismatches:
        registry = result.target.split("/", 1)[0]
        lines.append(f"Verification failed for {len(result.mismatches)} tags:")
        lines += [f"  {m.describe(registry)}" for m in result.mismatches]
    return lines + _withheld_lines(result)
