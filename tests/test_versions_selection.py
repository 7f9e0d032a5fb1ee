"""VersionsToMirror (R-3.4), Q13/Q14, and the summary sort."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from d8mirror.versions import (
    PackageConstraint,
    PackageFilter,
    SemverConstraint,
    needs_tag_listing,
    parse_version_lenient,
    sort_versions_desc,
    versions_to_mirror,
)

HELP_REGISTRY = ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0", "v1.3.3", "v1.4.0", "v1.4.1", "stable"]
PACKAGE_REGISTRY = ["v1.39.0", "v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.45.2"]


def select(*include: str, tags: list[str]) -> list[str]:
    constraint = PackageFilter.from_flags(include=include).constraint_for("name")
    return versions_to_mirror(constraint, tags)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name", []),
        ("name@1.3.0", ["v1.3.3", "v1.4.1"]),
        ("name@~1.3.0", ["v1.3.3"]),
        ("name@^1.3.0", ["v1.3.3", "v1.4.1"]),
        ("name@>=1.3.0", ["v1.3.0", "v1.3.3", "v1.4.1"]),
        ("name@>=1.3.0 <=1.4.0", ["v1.3.0", "v1.3.3", "v1.4.0"]),
        ("name@=v1.3.0", ["v1.3.0"]),
        ("name@=v1.3.0+stable", ["v1.3.0"]),
        ("name@=bobV1", ["bobV1"]),
    ],
)
def test_reference_help_table(expression: str, expected: list[str]) -> None:
    """R-3.4 first table (channel versions are added by the caller)."""
    assert select(expression, tags=HELP_REGISTRY) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name@1.40.0", ["v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.45.2"]),
        ("name@^1.40.0", ["v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.45.2"]),
        ("name@~1.40.0", ["v1.40.1"]),
        ("name@>=1.40.0 <1.43.0", ["v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0"]),
        ("name@>=1.40.0", ["v1.40.0", "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.45.2"]),
    ],
)
def test_package_test_table(expression: str, expected: list[str]) -> None:
    """R-3.4 second table / R-10.1 #1–4 (v1.45.2 there also comes from the channels)."""
    assert select(expression, tags=PACKAGE_REGISTRY) == expected


def test_latest_patch_per_minor() -> None:
    """R-10.1 #6."""
    tags = [f"v1.6.{p}" for p in range(6)] + ["v1.7.0", "v1.7.1"]
    assert select("name@v1.6.0", tags=tags) == ["v1.6.5", "v1.7.1"]


def test_bare_zero_version_spans_the_0x_line() -> None:
    """R-10.2 #29: 0.4.0 is >=0.4.0 <1.0.0 (unlike ^0.4.0); 1.52.0 equals ^1.52.0."""
    tags = ["v0.3.9", "v0.4.0", "v0.4.2", "v0.5.1", "v0.9.0", "v1.0.0"]
    assert select("name@0.4.0", tags=tags) == ["v0.4.2", "v0.5.1", "v0.9.0"]
    assert select("name@^0.4.0", tags=tags) == ["v0.4.2"]
    tags = ["v1.51.9", "v1.52.0", "v1.52.3", "v1.60.1", "v2.0.0"]
    assert select("name@1.52.0", tags=tags) == select("name@^1.52.0", tags=tags)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name@>1.3.0", ["v1.3.3", "v1.4.1"]),  # strict bound: no anchor
        ("name@^1.3.0", ["v1.3.3", "v1.4.1"]),  # caret: no anchor
        ("name@>=1.3.1", ["v1.3.3", "v1.4.1"]),  # anchor absent upstream: not invented
        ("name@<=1.4.0", ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.3", "v1.4.0"]),
        ("name@>=1.0.0 <1.2.0 || >=1.3.0 <1.4.0", ["v1.0.0", "v1.1.0", "v1.3.0", "v1.3.3"]),
    ],
)
def test_anchor_rules(expression: str, expected: list[str]) -> None:
    """R-10.2 #33."""
    assert select(expression, tags=HELP_REGISTRY) == expected


def test_merged_exacts_and_mixed_constraints() -> None:
    """R-10.2 #33: three merged exacts all come back; exacts first, then semver ascending."""
    assert select("name@=v3", "name@=v1", "name@=v2", tags=[]) == ["v3", "v1", "v2"]
    mixed = select("name@^1.4.0", "name@=v1.0.0", "name@~1.3.0", "name@=v1.3.3", tags=HELP_REGISTRY)
    assert mixed == ["v1.0.0", "v1.3.3", "v1.4.1"]


def test_tags_come_back_as_listed() -> None:
    """Q13: a registry tag "1.40.0" is requested as "1.40.0", not "v1.40.0"."""
    assert select("name@^1.40.0", tags=["1.40.0", "1.40.2", "v1.41.0"]) == ["1.40.2", "v1.41.0"]
    assert select("name@^1.40.0", tags=["1.40.2", "v1.40.2"]) == ["v1.40.2"]
    assert select("name@^1.40.0", tags=["v1.40", "1.40.0", "v1.40.0"]) == ["v1.40.0"]
    assert select("name@^1.40.0", tags=["v1.40"]) == ["v1.40"]


def test_prereleases_need_a_prerelease_constraint() -> None:
    tags = ["v1.0.0", "v1.1.0-rc.1", "v1.1.0-rc.2"]
    assert select("name@^1.0.0", tags=tags) == ["v1.0.0"]
    assert select("name@>=1.1.0-rc.1", tags=tags) == ["v1.1.0-rc.1", "v1.1.0-rc.2"]


def test_needs_tag_listing() -> None:
    """R-10.1 #7: listing only for constraints that are not exact-only."""
    assert not needs_tag_listing(None)
    assert not needs_tag_listing(PackageFilter.from_flags(include=["a@=v1"]).constraint_for("a"))
    assert needs_tag_listing(PackageFilter.from_flags(include=["a@^1"]).constraint_for("a"))
    mixed = PackageFilter.from_flags(include=["a@=v1", "a@^1"]).constraint_for("a")
    assert needs_tag_listing(mixed)


def test_sort_versions_desc() -> None:
    versions = ["stable", "v1.2.0", "1.10.0", "v1.2.0-rc.1", "alpha", "v1.9", "v1.2.0"]
    assert sort_versions_desc(versions) == [
        "1.10.0",
        "v1.9",
        "v1.2.0",
        "v1.2.0-rc.1",
        "alpha",
        "stable",
    ]


# ---- properties ---------------------------------------------------------------------------

small = st.integers(0, 3)
tag_lists = st.lists(
    st.one_of(
        st.builds(
            lambda a, b, c, v: f"{v}{a}.{b}.{c}", small, small, small, st.sampled_from(["v", ""])
        ),
        st.builds(lambda a, b: f"v{a}.{b}", small, small),
        st.sampled_from(["stable", "latest", "v1.1.1-rc.1"]),
    ),
    max_size=25,
)
constraints = st.sampled_from(
    [
        "^1.0.0",
        "~1.1",
        ">=1.1.0",
        ">=0.2.1 <=2.1.0",
        "<2",
        "1.1.1",
        ">=1.0 <1.2 || >=2.2",
        ">=0.0.0",
    ]
)


def _constraint(text: str) -> PackageConstraint:
    constraint = PackageFilter.from_flags(include=[f"p@{text}"]).constraint_for("p")
    assert constraint is not None
    return constraint


@given(text=constraints, tags=tag_lists, seed=st.integers(0, 2**16))
def test_selection_invariants(text: str, tags: list[str], seed: int) -> None:
    constraint = _constraint(text)
    (semver_constraint,) = constraint.semvers
    selected = versions_to_mirror(constraint, tags)
    matched = [t for t in tags if (v := parse_version_lenient(t)) and semver_constraint.matches(v)]
    # a subset of the listed, matching tags, without duplicates
    assert set(selected) <= set(matched) and len(selected) == len(set(selected))
    # at most one tag per version and per (major, minor), anchors aside
    versions = [parse_version_lenient(t) for t in selected]
    assert len({str(v) for v in versions}) == len(versions)
    non_anchor = [v for v in versions if v is not None and v not in semver_constraint.anchors]
    assert len({(v.major, v.minor) for v in non_anchor}) == len(non_anchor)
    # every matching minor is represented by its latest patch
    for v in (parse_version_lenient(t) for t in matched):
        assert v is not None
        assert any(
            s is not None and (s.major, s.minor) == (v.major, v.minor) and s >= v for s in versions
        )
    # deterministic, ascending, independent of the listing order
    shuffled = list(tags)
    random.Random(seed).shuffle(shuffled)
    assert versions_to_mirror(constraint, shuffled) == selected
    assert versions == sorted(versions)  # type: ignore[type-var]


@given(text=constraints, tags=tag_lists)
def test_selection_is_idempotent(text: str, tags: list[str]) -> None:
    constraint = _constraint(text)
    selected = versions_to_mirror(constraint, tags)
    assert versions_to_mirror(constraint, selected) == selected


def test_select_semver_directly() -> None:
    from d8mirror.versions import select_semver

    picks = select_semver(SemverConstraint.parse(">=1.3.0"), HELP_REGISTRY)
    assert [t for _, t in picks] == ["v1.3.0", "v1.3.3", "v1.4.1"]
