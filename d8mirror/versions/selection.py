"""Which tags of a package to mirror, given its constraint and the registry's tags (R-3.4).

Semver selection keeps the latest patch of every matching (major, minor) and restores the
inclusive anchors (``>=`` / ``<=`` literals) that exist among the matching tags. Tags are
returned exactly as the registry listed them (Q13), in a deterministic order (Q14):
exact tags in declaration order, then semver picks ascending by version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import semver

from d8mirror.versions.filters import PackageConstraint
from d8mirror.versions.semver_constraints import SemverConstraint, parse_version_lenient

_Key = tuple[int, int, int, str, str]


def _key(version: semver.Version) -> _Key:
    """Identity of a version including build metadata (tags differing only by build differ)."""
    return (
        version.major,
        version.minor,
        version.patch,
        version.prerelease or "",
        version.build or "",
    )


def _tag_preference(tag: str, version: semver.Version) -> tuple[int, int, str]:
    """Among tags naming one version: ``v<canonical>`` first, then any ``v`` tag, then lexical."""
    return (tag != f"v{version}", not tag.startswith("v"), tag)


def _tags_by_version(tags: Iterable[str]) -> dict[_Key, tuple[semver.Version, str]]:
    """Semver tags keyed by version; one preferred tag string per version."""
    chosen: dict[_Key, tuple[semver.Version, str]] = {}
    for tag in tags:
        version = parse_version_lenient(tag)
        if version is None:
            continue  # channel names, "latest", ...
        key = _key(version)
        if key not in chosen or (
            _tag_preference(tag, version) < _tag_preference(chosen[key][1], version)
        ):
            chosen[key] = (version, tag)
    return chosen


def _order(item: tuple[semver.Version, str]) -> tuple[semver.Version, str]:
    """Ascending by precedence; equal precedence (build metadata only) by build text."""
    return item[0], item[0].build or ""


def select_semver(
    constraint: SemverConstraint, tags: Iterable[str]
) -> list[tuple[semver.Version, str]]:
    """(version, tag) picks of one semver constraint, ascending by version."""
    matched = sorted(
        (item for item in _tags_by_version(tags).values() if constraint.matches(item[0])),
        key=_order,
    )
    latest_per_minor: dict[tuple[int, int], tuple[semver.Version, str]] = {}
    for item in matched:  # ascending, so the last one per bucket wins
        latest_per_minor[(item[0].major, item[0].minor)] = item
    picks = {_key(v): (v, t) for v, t in latest_per_minor.values()}
    for anchor in constraint.anchors:
        if any(v.compare(anchor) == 0 for v, _ in picks.values()):
            continue
        present = [item for item in matched if item[0].compare(anchor) == 0]
        if present:
            picks[_key(present[0][0])] = present[0]
    return sorted(picks.values(), key=_order)


def versions_to_mirror(constraint: PackageConstraint | None, tags: Sequence[str]) -> list[str]:
    """Tags to pull for a package besides its channel versions.

    No constraint: ``[]``. Exact tags: returned as given, even if absent upstream.
    Semver: selected from ``tags`` (the listing or the proxy probe), as listed.
    """
    if constraint is None:
        return []
    out = [exact.tag for exact in constraint.exacts]
    picks: dict[_Key, tuple[semver.Version, str]] = {}
    for semver_constraint in constraint.semvers:
        for version, tag in select_semver(semver_constraint, tags):
            picks.setdefault(_key(version), (version, tag))
    out.extend(tag for _, tag in sorted(picks.values(), key=_order))
    return list(dict.fromkeys(out))


def needs_tag_listing(constraint: PackageConstraint | None) -> bool:
    """Whether the package's tags must be listed (or probed): a non-exact constraint exists."""
    return constraint is not None and not constraint.is_exact_only


def sort_versions_desc(versions: Iterable[str]) -> list[str]:
    """Summary order: semver tags newest first, then non-semver tags lexically."""
    parsed: list[tuple[semver.Version, str]] = []
    others: list[str] = []
    for tag in dict.fromkeys(versions):
        version = parse_version_lenient(tag)
        if version is None:
            others.append(tag)
        else:
            parsed.append((version, tag))
    parsed.sort(key=lambda item: (item[0], item[0].build or "", item[1]), reverse=True)
    return [tag for _, tag in parsed] + sorted(others)
