"""The --proxy-registry probe: exact call sequences of R-2.3.1 and proxy constraint rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d8mirror.errors import FilterError, MirrorError, ProbeCancelled, ServerError
from d8mirror.versions import (
    PackageFilter,
    SemverConstraint,
    parse_version_lenient,
    probe_versions,
    proxy_semver_constraints,
    versions_to_mirror,
)


def registry(*present: str) -> tuple[Callable[[str], bool], list[str]]:
    calls: list[str] = []

    def exists(tag: str) -> bool:
        calls.append(tag)
        return tag in present

    return exists, calls


@pytest.mark.parametrize(
    ("constraint", "present", "calls", "found"),
    [
        (  # the worked example: 3.0.0 is out of range, never requested
            ">=1.0.0 <3.0.0",
            ("v1.0.0", "v2.0.0", "v2.0.1"),
            ["v1.0.0", "v1.0.1", "v1.1.0", "v2.0.0", "v2.0.1", "v2.0.2", "v2.1.0"],
            ["v1.0.0", "v2.0.0", "v2.0.1"],
        ),
        (
            "^1.64.0",
            ("v1.64.0", "v1.64.1", "v1.64.2"),
            ["v1.64.0", "v1.64.1", "v1.64.2", "v1.64.3", "v1.65.0"],
            ["v1.64.0", "v1.64.1", "v1.64.2"],
        ),
        (  # missing start: the next minor is still tried
            ">=1.64.0 <2.0.0",
            ("v1.65.0", "v1.65.1"),
            ["v1.64.0", "v1.65.0", "v1.65.1", "v1.65.2", "v1.66.0"],
            ["v1.65.0", "v1.65.1"],
        ),
        (  # quirk: a strict lower bound skips the whole 1.64.x line
            ">1.64.0",
            ("v1.64.1", "v1.64.2", "v1.65.0"),
            ["v1.65.0", "v1.65.1", "v1.66.0", "v2.0.0"],
            ["v1.65.0"],
        ),
        (  # a gap stops the patch walk: v1.64.2 stays hidden
            "^1.64.0",
            ("v1.64.0", "v1.64.2"),
            ["v1.64.0", "v1.64.1", "v1.65.0"],
            ["v1.64.0"],
        ),
    ],
)
def test_probe_call_sequences(
    constraint: str, present: tuple[str, ...], calls: list[str], found: list[str]
) -> None:
    """R-10.2 #35."""
    exists, seen = registry(*present)
    assert probe_versions(SemverConstraint.parse(constraint), exists) == found
    assert seen == calls


def test_or_constraint_is_walked_as_one_range_from_its_smallest_literal() -> None:
    exists, seen = registry("v1.0.0", "v3.0.0")
    found = probe_versions(SemverConstraint.parse(">=3.0.0 || >=1.0.0 <1.1.0"), exists)
    assert found == ["v1.0.0"]
    assert seen == ["v1.0.0", "v1.0.1"]  # 1.1.0 and 2.0.0 out of range: walk ends


def test_checker_errors_propagate() -> None:
    def broken(tag: str) -> bool:
        raise ServerError(f"HEAD {tag}: 503", status=503)

    with pytest.raises(ServerError, match=r"v1\.0\.0: 503"):
        probe_versions(SemverConstraint.parse(">=1.0.0"), broken)


def test_cancelled_before_start_makes_no_call() -> None:
    exists, seen = registry("v1.0.0")
    with pytest.raises(ProbeCancelled):
        probe_versions(SemverConstraint.parse(">=1.0.0"), exists, should_stop=lambda: True)
    assert seen == [] and issubclass(ProbeCancelled, MirrorError)


def test_cancelled_mid_walk_stops_calling() -> None:
    exists, seen = registry("v1.0.0", "v1.0.1", "v1.0.2")
    with pytest.raises(ProbeCancelled):
        probe_versions(
            SemverConstraint.parse(">=1.0.0"), exists, should_stop=lambda: len(seen) >= 2
        )
    assert seen == ["v1.0.0", "v1.0.1"]


def test_proxy_selection_pipeline() -> None:
    """R-10.1 #22: >=1.40.0 over served v1.40.0 v1.40.1 v1.41.0 pulls all three."""
    constraint = PackageFilter.from_flags(include=["p@>=1.40.0"]).constraint_for("p")
    exists, _ = registry("v1.40.0", "v1.40.1", "v1.41.0")
    tags = [t for c in proxy_semver_constraints(constraint, "p") for t in probe_versions(c, exists)]
    assert versions_to_mirror(constraint, tags) == ["v1.40.0", "v1.40.1", "v1.41.0"]


def test_proxy_semver_constraints() -> None:
    filt = PackageFilter.from_flags(include=["bare", "pin@=v1", "mix@=v1", "mix@^1", "mix@~2.0"])
    assert proxy_semver_constraints(filt.constraint_for("bare"), "bare") == []
    assert [c.text for c in proxy_semver_constraints(filt.constraint_for("mix"), "mix")] == [
        "^1",
        "~2.0",
    ]
    with pytest.raises(FilterError, match=r"^package pin: --proxy-registry only supports semver"):
        proxy_semver_constraints(filt.constraint_for("pin"), "pin")


versions = st.builds(
    lambda a, b, c: f"v{a}.{b}.{c}", st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)
)


@settings(max_examples=60)
@given(
    present=st.sets(versions, max_size=20),
    text=st.sampled_from([">=0.0.0", "^1.0.0", ">=1.1.0 <3.0.0", "~2.1.0", ">0.2.0"]),
)
def test_probe_only_reports_existing_matching_versions(present: set[str], text: str) -> None:
    constraint = SemverConstraint.parse(text)
    exists, seen = registry(*present)
    found = probe_versions(constraint, exists)
    assert set(found) <= present and len(found) == len(set(found))
    assert len(seen) == len(set(seen))  # never asks twice
    for tag in seen:
        version = parse_version_lenient(tag)
        assert version is not None and constraint.matches(version)
