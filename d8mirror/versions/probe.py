"""Find a package's versions without listing tags: the --proxy-registry probe (R-2.3, R-2.3.1).

Proxies and pull-through caches serve manifests by tag but refuse ``/tags/list``. The probe
walks candidate versions upward from the constraint's lower bound, asking ``exists`` about
each in-range candidate ``v<M.m.p>``: patches while they exist, then the next minor, then
the next major. Known limits, kept on purpose: a gap stops the walk (missing v1.64.1 hides
v1.64.2); a strict lower bound (``>1.64.0``) skips the whole 1.64.x line; pre-releases and
non-semver tags are never probed; an ``||`` constraint is walked as one range.
"""

from __future__ import annotations

from collections.abc import Callable

import semver

from d8mirror.errors import FilterError, ProbeCancelled
from d8mirror.versions.filters import PackageConstraint
from d8mirror.versions.semver_constraints import SemverConstraint


def _never_stop() -> bool:
    return False


class _Walk:
    """The probe's cursor (M, m, p) and what it has found so far."""

    def __init__(
        self,
        constraint: SemverConstraint,
        exists: Callable[[str], bool],
        should_stop: Callable[[], bool],
    ) -> None:
        start = constraint.lower_bound()
        self.major, self.minor, self.patch = start.major, start.minor, start.patch
        self.constraint = constraint
        self.exists = exists
        self.should_stop = should_stop
        self.found: list[str] = []

    def step(self) -> bool:
        """Probe the cursor; on a hit record it and move to the next patch."""
        if self.should_stop():
            raise ProbeCancelled(
                f"probing versions for constraint {self.constraint.text!r} was cancelled"
            )
        candidate = semver.Version(self.major, self.minor, self.patch)
        if not self.constraint.matches(candidate):
            return False  # out of range: no request
        tag = f"v{candidate}"
        if not self.exists(tag):
            return False
        self.found.append(tag)
        self.patch += 1
        return True

    def next_minor(self) -> None:
        self.minor, self.patch = self.minor + 1, 0

    def next_major(self) -> None:
        self.major, self.minor, self.patch = self.major + 1, 0, 0


def probe_versions(
    constraint: SemverConstraint,
    exists: Callable[[str], bool],
    *,
    should_stop: Callable[[], bool] = _never_stop,
) -> list[str]:
    """Tags ``v<version>`` that exist and match, in walk order (R-2.3.1, exact).

    ``exists(tag)`` answers whether the manifest exists (True/False); any exception it raises
    aborts the probe and propagates. ``should_stop()`` is asked before every candidate;
    True raises :class:`ProbeCancelled` (before any further ``exists`` call).
    """
    walk = _Walk(constraint, exists, should_stop)
    while True:
        while walk.step():
            pass
        walk.next_minor()
        if walk.step():
            continue
        walk.next_major()
        if walk.step():
            continue
        return walk.found


def proxy_semver_constraints(
    constraint: PackageConstraint | None, package: str
) -> list[SemverConstraint]:
    """The semver sub-constraints to probe for ``package`` in proxy mode (R-2.3).

    No constraint (bare include): ``[]`` — channel versions only. A constraint without
    semver parts (exact pins only, which need no probing; gate with ``needs_tag_listing``)
    raises FilterError.
    """
    if constraint is None:
        return []
    if not constraint.semvers:
        raise FilterError(
            f"package {package}: --proxy-registry only supports semver-style constraints, "
            f"got {constraint} (exact tags are pulled directly and need no probing)"
        )
    return list(constraint.semvers)
