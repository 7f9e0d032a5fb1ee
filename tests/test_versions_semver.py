"""Masterminds/semver v3 constraint semantics, lenient versions, anchors and lower bounds."""

from __future__ import annotations

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from d8mirror.errors import FilterError
from d8mirror.versions import SemverConstraint, parse_version_lenient

V = semver.Version.parse

MATCH_TABLE = [
    # operators, aliases and v prefixes
    ("=2.0.0", "2.0.0", True),
    ("=2.0.0", "1.2.3", False),
    ("2.0.0", "2.0.0", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "5.1.0", True),
    ("!=1.2.3", "1.2.4", True),
    (">1.2.3", "1.2.4", True),
    (">1.2.3", "1.2.3", False),
    (">1.1", "1.1.9", False),
    (">1.1", "1.2.0", True),
    (">2", "2.9.0", False),
    (">2", "3.0.0", True),
    ("<1.1", "1.0.9", True),
    ("<1.1", "1.1.1", False),
    ("<=1.1", "1.1.9", True),
    ("<=1.1", "1.2.0", False),
    ("<=1.2.3", "1.2.4", False),
    (">=1.2.3", "1.2.3", True),
    ("=>1.2.0", "1.2.0", True),
    ("=<1.2.0", "1.2.1", False),
    ("v1.2.3", "1.2.3", True),
    (">=v1.2", "1.2.0", True),
    (">= 1.2.3", "1.2.3", True),
    # tilde
    ("~1.2.3", "1.2.3", True),
    ("~1.2.3", "1.2.9", True),
    ("~1.2.3", "1.3.0", False),
    ("~1.2.3", "1.2.2", False),
    ("~1.2", "1.2.7", True),
    ("~1.2", "1.3.0", False),
    ("~1", "1.9.9", True),
    ("~1", "2.0.0", False),
    ("~>1.2.3", "1.2.5", True),
    ("~0.0.0", "4.0.0", True),
    ("~*", "4.0.0", True),
    # caret
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.0.0", False),
    ("^1.2.3", "1.2.2", False),
    ("^1.2", "1.9.0", True),
    ("^1", "1.0.0", True),
    ("^1", "2.0.0", False),
    ("^2.x", "2.9.0", True),
    ("^0.4.0", "0.4.9", True),
    ("^0.4.0", "0.5.0", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.3.0", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.9", True),
    ("^0.0", "0.1.0", False),
    ("^0", "0.9.9", True),
    ("^0", "1.0.0", False),
    ("^*", "3.1.4", True),
    # x-ranges
    ("2.x", "2.1.1", True),
    ("2.x", "3.0.0", False),
    ("2.1.x", "2.1.1", True),
    ("2.1.x", "2.2.0", False),
    ("1.*", "1.5.0", True),
    ("*", "4.1.0", True),
    ("2.1.X", "2.1.3", True),
    # pre-releases only match constraints that carry a pre-release part
    ("*", "1.0.0-alpha", False),
    (">=1.2.3", "1.2.4-beta", False),
    ("<2.0.0", "1.5.0-rc.1", False),
    ("^1.2.3", "1.3.0-rc.1", False),
    ("~1.2.3", "1.2.4-rc.1", False),
    (">=1.2.3-beta.2", "1.2.3-beta.3", True),
    (">=1.2.3-beta.2", "1.2.3-beta.1", False),
    (">=1.2.3-beta.2", "1.2.3", True),
    ("^1.2.3-rc.1", "1.2.3-rc.2", True),
    # AND by space or comma, OR by ||, hyphen ranges
    (">=1, <2", "1.5.0", True),
    (">=1,<2", "2.0.0", False),
    (">=1.0.0 <3.0.0", "2.9.9", True),
    (">=1 || <0.5", "0.4.0", True),
    (">=1 || <0.5", "0.7.0", False),
    (">=1.0 <1.1 || >=2.0", "1.0.3", True),
    (">=1.0 <1.1 || >=2.0", "1.5.0", False),
    ("1.0.0 - 2.0.0", "2.0.0", True),
    ("1.0.0 - 2.0.0", "2.0.1", False),
    ("1.0.0 - 2.0.0", "0.9.0", False),
    # build metadata is ignored in comparisons
    ("=1.2.3", "1.2.3+build.5", True),
]


@pytest.mark.parametrize(("constraint", "version", "expected"), MATCH_TABLE)
def test_masterminds_semantics(constraint: str, version: str, expected: bool) -> None:
    assert SemverConstraint.parse(constraint).matches(V(version)) is expected


@pytest.mark.parametrize(
    "text",
    ["", "invalid", ">=abc", ">=1.0.0<2", ">=1x", ">=1.2.3-01", ">= ", "1.2.3 ||", "a || >=1"],
)
def test_bad_constraints_raise_filter_error(text: str) -> None:
    with pytest.raises(FilterError, match=r'^invalid semver "'):
        SemverConstraint.parse(text)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v1.2.3", V("1.2.3")),
        ("1.2.3", V("1.2.3")),
        ("v1.2", V("1.2.0")),
        ("1", V("1.0.0")),
        ("v1.2.3-rc.1", V("1.2.3-rc.1")),
        ("1.2.3+build.1", V("1.2.3+build.1")),
        ("stable", None),
        ("latest", None),
        ("v1.2.3.4", None),
        ("1.2.x", None),
        ("V1.2.3", None),
        ("1.2.3-01", None),
        ("", None),
    ],
)
def test_parse_version_lenient(tag: str, expected: semver.Version | None) -> None:
    parsed = parse_version_lenient(tag)
    assert parsed == expected
    if expected is not None:
        assert parsed is not None and parsed.build == expected.build


@pytest.mark.parametrize(
    ("text", "anchors"),
    [
        (">=1.3.0", ["1.3.0"]),
        (">=1.3.0 <=1.4.0", ["1.3.0", "1.4.0"]),
        ("=>v1.2 =<2.0.0 || >=3.0.0", ["1.2.0", "2.0.0", "3.0.0"]),
        (">1.3.0 <1.5.0", []),
        ("^1.3.0", []),
        ("~1.3.0", []),
        (">=1.x", []),
    ],
)
def test_inclusive_anchors(text: str, anchors: list[str]) -> None:
    assert SemverConstraint.parse(text).anchors == tuple(V(a) for a in anchors)


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        (">1.0.0 <=1.5.0", "1.0.0"),
        ("<=1.68.0 >=1.64.0", "1.64.0"),
        (">=1.64 <=1.68", "1.64.0"),
        (">=v1.50.0 <2.0.0", "1.50.0"),
        ("^1.64.0", "1.64.0"),
        (">=2.0.0 || >=1.1.0 <1.2.0", "1.1.0"),
        ("*", "0.0.0"),
    ],
)
def test_lower_bound_is_smallest_literal(text: str, bound: str) -> None:
    """R-10.2 #34: operators ignored, smallest literal wins."""
    assert SemverConstraint.parse(text).lower_bound() == V(bound)


def test_implicit_version_spans_its_major_without_anchors() -> None:
    implicit = SemverConstraint.implicit_from_version("0.4.0")
    assert implicit.implicit and implicit.anchors == () and implicit.text == "0.4.0"
    assert implicit.matches(V("0.9.1")) and not implicit.matches(V("1.0.0"))
    assert not implicit.matches(V("0.3.9"))
    assert SemverConstraint.implicit_from_version("v1.52").lower_bound() == V("1.52.0")


@pytest.mark.parametrize("text", ["invalid", "1.2.x", "*", ">=1"])
def test_implicit_rejects_non_versions(text: str) -> None:
    with pytest.raises(FilterError, match=r'^invalid version "'):
        SemverConstraint.implicit_from_version(text)


releases = st.builds(
    semver.Version,
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 4),
)


@given(base=releases, probe=releases)
def test_tilde_and_caret_equal_their_explicit_ranges(
    base: semver.Version, probe: semver.Version
) -> None:
    tilde = SemverConstraint.parse(f"~{base}")
    tilde_range = f">={base} <{base.major}.{base.minor + 1}.0"
    if base == semver.Version(0, 0, 0):
        tilde_range = "*"  # Masterminds: ~0.0.0 accepts everything
    assert tilde.matches(probe) == SemverConstraint.parse(tilde_range).matches(probe)
    if base.major > 0:
        upper = f"{base.major + 1}.0.0"
    elif base.minor > 0:
        upper = f"0.{base.minor + 1}.0"
    else:
        upper = f"0.0.{base.patch + 1}"
    caret = SemverConstraint.parse(f"^{base}")
    assert caret.matches(probe) == SemverConstraint.parse(f">={base} <{upper}").matches(probe)


@given(base=releases, probe=releases)
def test_implicit_is_major_range_for_0x_too(base: semver.Version, probe: semver.Version) -> None:
    implicit = SemverConstraint.implicit_from_version(str(base))
    assert implicit.matches(probe) == (probe >= base and probe.major == base.major)


@given(version=releases, pre=st.sampled_from(["rc.1", "alpha", "beta.2"]))
def test_release_constraints_never_match_prereleases(version: semver.Version, pre: str) -> None:
    candidate = version.replace(prerelease=pre)
    for text in ("*", ">=0.0.0", "<99.0.0", f"^{version.major}", f"~{version.major}"):
        assert not SemverConstraint.parse(text).matches(candidate)
