"""The NAME[@CONSTRAINT] grammar, whitelist/blacklist, OR-merge and channel-alias targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d8mirror.errors import ConfigError, EmptyConstraintError, FilterError
from d8mirror.versions import (
    ALL_CHANNELS,
    DEFAULT_CHANNELS,
    ExactTag,
    PackageConstraint,
    PackageFilter,
    is_valid_channel,
    parse_expression,
)


def constraint_of(*include: str, name: str = "pkg") -> PackageConstraint | None:
    return PackageFilter.from_flags(include=include).constraint_for(name)


def test_channels() -> None:
    assert DEFAULT_CHANNELS == ("alpha", "beta", "early-access", "stable", "rock-solid")
    assert ALL_CHANNELS[:-1] == DEFAULT_CHANNELS and ALL_CHANNELS[-1] == "lts"
    assert all(is_valid_channel(c) for c in ALL_CHANNELS)
    assert not is_valid_channel("Stable") and not is_valid_channel("bogus")


def test_empty_flags_give_an_accept_all_blacklist() -> None:
    """R-10.2 #28 / #32: no expressions is valid and matches everything."""
    accept_all = PackageFilter.from_flags()
    assert not accept_all.is_whitelist
    assert accept_all.matches("console") and accept_all.constraint_for("console") is None
    assert accept_all.whitelist_names() == [] and accept_all.warnings() == []


def test_whitelist_and_blacklist_membership() -> None:
    """R-10.2 #32."""
    white = PackageFilter.from_flags(include=["console", "scanner@^1.0"])
    assert white.matches("console") and white.matches("scanner") and not white.matches("other")
    assert white.whitelist_names() == ["console", "scanner"]
    black = PackageFilter.from_flags(exclude=["console"])
    assert not black.matches("console") and black.matches("other")
    assert not PackageFilter(is_whitelist=True).matches("anything")


def test_include_and_exclude_are_mutually_exclusive() -> None:
    with pytest.raises(FilterError, match=r"^--include-package and --exclude-package are mutually"):
        PackageFilter.from_flags(include=["a"], exclude=["b"])


@pytest.mark.parametrize("expression", [" @1.2.3", "@=v1", "", "   "])
def test_empty_name_is_malformed(expression: str) -> None:
    with pytest.raises(FilterError, match=r'^Malformed filter expression ".*": empty name$'):
        PackageFilter.from_flags(include=[expression])


@pytest.mark.parametrize("flag", ["--include-package", "--exclude-package"])
def test_empty_constraint_names_flag_and_value(flag: str) -> None:
    kwargs = {"include" if flag == "--include-package" else "exclude": ["console@ "]}
    with pytest.raises(EmptyConstraintError) as info:
        PackageFilter.from_flags(**kwargs)
    assert info.value.flag == flag and info.value.value == "console@ "
    assert isinstance(info.value, FilterError) and isinstance(info.value, ConfigError)
    assert str(info.value).startswith(f"Version constraint is missing after '@' in {flag} ")
    assert f'quote it: {flag} "console@>=1.43.2"' in str(info.value)


@pytest.mark.parametrize(
    ("expression", "pattern"),
    [
        ("name@invalid", r'invalid version "invalid"'),
        ("name@1.2.x", r'invalid version "1.2.x"'),
        ("name@*", r'invalid version "\*"'),
        ("name@>=abc", r'invalid semver ">=abc"'),
        ("name@~", r'invalid semver "~"'),
        ("name@=", r'empty tag in ""'),
        ("name@=+stable", r'empty tag in "\+stable"'),
        ("Console@1.2.3", r'invalid package name "Console"'),
        ("../etc@1.2.3", r'invalid package name "../etc"'),
    ],
)
def test_invalid_expressions(expression: str, pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        PackageFilter.from_flags(include=[expression])


def test_blacklist_constraints_are_validated_then_ignored_with_a_warning() -> None:
    """R-3.2 / Q20."""
    with pytest.raises(FilterError):
        PackageFilter.from_flags(exclude=["x@invalid"])
    black = PackageFilter.from_flags(exclude=["x@1.2", "y"])
    assert not black.matches("x") and black.constraint_for("x") is None
    assert black.warnings() == [
        "--exclude-package x@1.2: version constraints in --exclude-package are ignored; "
        "the whole package is excluded"
    ]


@pytest.mark.parametrize(
    ("expression", "exact"),
    [
        ("=v1.3.0", ExactTag("v1.3.0")),
        ("=v1.3.0+stable", ExactTag("v1.3.0", "stable")),
        ("=v1.3.0+lts", ExactTag("v1.3.0", "lts")),
        ("=v1.3.0+bogus", ExactTag("v1.3.0")),
        ("=bobV1", ExactTag("bobV1")),
        ("=>1.2.0", ExactTag(">1.2.0")),
        ("= v1.3.0 + early-access ", ExactTag("v1.3.0", "early-access")),
    ],
)
def test_exact_tag_grammar(expression: str, exact: ExactTag) -> None:
    constraint = constraint_of(f"pkg@{expression}")
    assert constraint == PackageConstraint(exacts=(exact,))
    assert constraint.is_exact_only


def test_exact_tag_oddities_warn() -> None:
    assert any("bogus" in w for w in parse_expression("pkg@=v1.3.0+bogus").warnings)
    (warning,) = parse_expression("pkg@=>1.2.0").warnings
    assert '">1.2.0"' in warning and 'did you mean ">=1.2.0"' in warning
    assert parse_expression("pkg@=v1.3.0+stable").warnings == ()


@pytest.mark.parametrize("expression", ["pkg@>=1.0", "pkg@<2", "pkg@~1.2", "pkg@^1.2", "pkg@1.2"])
def test_semver_kinds(expression: str) -> None:
    constraint = constraint_of(expression)
    assert constraint is not None and not constraint.is_exact_only
    assert len(constraint.semvers) == 1 and constraint.exacts == ()
    assert constraint.semvers[0].implicit is expression.endswith("@1.2")


def test_bare_include_has_no_constraint() -> None:
    """R-10.2 #30."""
    only_bare = PackageFilter.from_flags(include=["pkg"])
    assert only_bare.matches("pkg") and only_bare.constraint_for("pkg") is None


@pytest.mark.parametrize("order", [("pkg", "pkg@=v1.2.3"), ("pkg@=v1.2.3", "pkg")])
def test_bare_merged_with_pinned_keeps_pin(order: tuple[str, str]) -> None:
    """R-10.2 #31."""
    assert constraint_of(*order) == PackageConstraint(exacts=(ExactTag("v1.2.3"),))
    assert constraint_of("pkg", "pkg") is None


def test_repeated_names_or_combine() -> None:
    """R-3.1 step 4 / R-10.2 #28: duplicates merge, in declaration order."""
    merged = constraint_of("pkg@=v0.0.2", "pkg@=v0.0.3", "other@^1", "pkg@^1.0.0")
    assert merged is not None
    assert merged.exacts == (ExactTag("v0.0.2"), ExactTag("v0.0.3"))
    assert [s.text for s in merged.semvers] == ["^1.0.0"]
    assert not merged.is_exact_only
    assert constraint_of("pkg@=v1", "pkg@=v1") == PackageConstraint(exacts=(ExactTag("v1"),))


def test_per_package_isolation() -> None:
    """R-10.1 #5."""
    both = PackageFilter.from_flags(include=["console@~1.40.0", "scanner@=v0.6.0"])
    console, scanner = both.constraint_for("console"), both.constraint_for("scanner")
    assert console is not None and console.exacts == () and len(console.semvers) == 1
    assert scanner == PackageConstraint(exacts=(ExactTag("v0.6.0"),))


@pytest.mark.parametrize(
    ("flags", "targets"),
    [
        (["c@=v1.2.3"], [("v1.2.3", ALL_CHANNELS)]),
        (["c@=v1.2.3+stable"], [("v1.2.3", ("stable",))]),
        (["c@=v1.2.3", "c@=v1.3.0"], [("v1.2.3", ()), ("v1.3.0", ())]),
        (
            ["c@=v1.2.3+stable", "c@=v1.3.0+alpha"],
            [("v1.2.3", ("stable",)), ("v1.3.0", ("alpha",))],
        ),
        (["c@=v1.2.3+stable", "c@=v1.3.0"], [("v1.2.3", ("stable",)), ("v1.3.0", ())]),
        (["c@=v1.2.3", "c@^1.0.0"], []),
        (["c@^1.0.0"], []),
    ],
)
def test_alias_targets_follow_section_4(
    flags: list[str], targets: list[tuple[str, tuple[str, ...]]]
) -> None:
    constraint = constraint_of(*flags, name="c")
    assert constraint is not None and constraint.alias_targets() == targets
    assert constraint.has_channel_alias == any("+" in f for f in flags)


def test_proxy_mode_requires_a_whitelist() -> None:
    """Q5."""
    with pytest.raises(FilterError, match="--proxy-registry requires a whitelist"):
        PackageFilter.from_flags(exclude=["x"]).require_whitelist_for_proxy()
    PackageFilter.from_flags(include=["x"]).require_whitelist_for_proxy()


names = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,5})?", fullmatch=True)
tags = st.from_regex(r"v?[0-9A-Za-z][0-9A-Za-z._-]{0,12}", fullmatch=True)
channels = st.sampled_from((*ALL_CHANNELS, None))


@settings(max_examples=60)
@given(name=names, tag=tags, channel=channels, pad=st.sampled_from(["", " ", "\t"]))
def test_exact_grammar_roundtrip(name: str, tag: str, channel: str | None, pad: str) -> None:
    expression = f"{pad}{name}{pad}@{pad}={tag}" + (f"+{channel}" if channel else "") + pad
    parsed = parse_expression(expression)
    assert parsed.name == name
    assert parsed.constraint == PackageConstraint(exacts=(ExactTag(tag.strip(), channel),))


merge_entries = st.lists(
    st.tuples(
        st.sampled_from(["a", "b-c", "console"]),
        st.sampled_from(["", "@=v1", "@=v2+beta", "@^1.2"]),
    )
)


@settings(max_examples=60)
@given(entries=merge_entries)
def test_merge_is_or_of_all_entries(entries: list[tuple[str, str]]) -> None:
    filt = PackageFilter.from_flags(include=[n + c for n, c in entries])
    for name in {n for n, _ in entries}:
        pins = {c for n, c in entries if n == name and c}
        constraint = filt.constraint_for(name)
        if not pins:
            assert constraint is None
        else:
            assert constraint is not None
            assert len(constraint.exacts) + len(constraint.semvers) == len(pins)
