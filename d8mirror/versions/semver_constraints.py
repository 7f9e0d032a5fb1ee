"""Semantic version constraints with the semantics of Go's Masterminds/semver v3.

The reference (deckhouse-cli) checks package versions with Masterminds/semver v3, whose
constraint dialect differs from npm's and from the ``semver`` PyPI package's ``match``.
This module ports its parser and comparison rules on top of :class:`semver.Version`:

* AND by whitespace or comma, OR by ``||``; ``A - B`` hyphen ranges mean ``>= A, <= B``;
* operators ``= != > < >= => <= =< ~ ~> ^`` (no operator means ``=``);
* x-ranges ``1.2.x``, ``1.*``, ``*`` and partial versions ``1.2``, ``1``; ``v`` prefixes;
* ``~1.2.3`` = ``>=1.2.3 <1.3.0``, ``~1`` = ``>=1 <2``; ``^1.2.3`` = ``>=1.2.3 <2.0.0``,
  ``^0.4.0`` = ``>=0.4.0 <0.5.0``, ``^0.0.3`` = ``>=0.0.3 <0.0.4``;
* a comparator whose version has no pre-release part never matches a pre-release version.

Versions compare by semver precedence (build metadata ignored), like ``Version.Compare`` in Go.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import semver

from d8mirror.errors import FilterError

_IDENT = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_PART = r"[0-9xX*]+"
# One version literal inside a constraint (Masterminds' cvRegex), capturing:
# major, ".minor", ".patch", pre-release, build.
_CV = rf"v?({_PART})(\.{_PART})?(\.{_PART})?(?:-({_IDENT}))?(?:\+({_IDENT}))?"
_CV_PLAIN = rf"v?{_PART}(?:\.{_PART})?(?:\.{_PART})?(?:-{_IDENT})?(?:\+{_IDENT})?"
# Longest operators first; the empty operator last (a bare version means "=").
_OPS = r"(?:>=|=>|<=|=<|!=|~>|>|<|=|~|\^|)"
_S = r"[ \t\n\r\f\v]"

_TOKEN_RE = re.compile(rf"^{_S}*({_OPS}){_S}*{_CV}{_S}*$")
_FIND_RE = re.compile(rf"{_OPS}{_S}*{_CV_PLAIN}")
_SEGMENT_RE = re.compile(
    rf"^{_S}*{_OPS}{_S}*{_CV_PLAIN}{_S}*(?:(?:{_S}+|,{_S}*){_OPS}{_S}*{_CV_PLAIN}{_S}*)*$"
)
_HYPHEN_RE = re.compile(rf"{_S}*({_CV_PLAIN}){_S}+-{_S}+({_CV_PLAIN}){_S}*")

# A lenient version (Go's semver.NewVersion): "v1.2.3", "1.2", "1", "v1.2.3-rc.1+build".
_VERSION_RE = re.compile(
    rf"^v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?(?:-({_IDENT}))?(?:\+({_IDENT}))?$"
)
# every version literal of a constraint string, operators ignored.
_LITERAL_RE = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+][0-9A-Za-z.\-]+)?")

_WILDCARDS = frozenset({"x", "X", "*"})
_INCLUSIVE_OPS = frozenset({">=", "=>", "<=", "=<"})
_ZERO = semver.Version(0, 0, 0)


def parse_version_lenient(tag: str) -> semver.Version | None:
    """Parse a tag as a version the way Go's ``semver.NewVersion`` does; None if it is not one.

    Accepts a ``v`` prefix and missing minor/patch (``v1.2`` is 1.2.0, ``1`` is 1.0.0).
    Channel names, ``latest`` and other non-semver tags give None.
    """
    match = _VERSION_RE.match(tag)
    if match is None:
        return None
    major, minor, patch, pre, build = match.groups()
    if pre is not None and not _valid_prerelease(pre):
        return None
    return semver.Version(int(major), int(minor or 0), int(patch or 0), pre, build)


def _valid_prerelease(pre: str) -> bool:
    """Numeric pre-release identifiers must not have leading zeros (SemVer §9)."""
    return all(not (p.isdigit() and len(p) > 1 and p[0] == "0") for p in pre.split("."))


def _is_x(part: str | None) -> bool:
    return part is not None and part in _WILDCARDS


@dataclass(frozen=True)
class _Comparator:
    """One ``<op><version>`` term. ``dirty`` flags mark x-ranges / partial versions."""

    op: str
    version: semver.Version
    literal: str
    dirty: bool = False
    minor_dirty: bool = False
    patch_dirty: bool = False
    major_wild: bool = False

    def matches(self, v: semver.Version) -> bool:
        return _CHECKS[self.op](v, self)


def _release_only_mismatch(v: semver.Version, c: _Comparator) -> bool:
    """A pre-release version never satisfies a comparator without a pre-release part."""
    return v.prerelease is not None and c.version.prerelease is None


def _check_not_equal(v: semver.Version, c: _Comparator) -> bool:
    con = c.version
    if c.dirty:
        if _release_only_mismatch(v, c):
            return False
        if con.major != v.major:
            return True
        if c.minor_dirty:
            return False
        if con.minor != v.minor:
            return True
        if c.patch_dirty:
            return (v.prerelease or con.prerelease) is not None and (v.prerelease != con.prerelease)
        if con.patch != v.patch:
            return True
    return v.compare(con) != 0


def _check_greater(v: semver.Version, c: _Comparator) -> bool:
    if _release_only_mismatch(v, c):
        return False
    con = c.version
    if not c.dirty:
        return v.compare(con) > 0
    if v.major != con.major:
        return v.major > con.major
    if c.minor_dirty:
        return False  # >11 needs 12 or higher
    if c.patch_dirty:
        return v.minor > con.minor  # >11.1 needs 11.2 or higher
    return v.compare(con) > 0


def _check_less(v: semver.Version, c: _Comparator) -> bool:
    return not _release_only_mismatch(v, c) and v.compare(c.version) < 0


def _check_greater_equal(v: semver.Version, c: _Comparator) -> bool:
    return not _release_only_mismatch(v, c) and v.compare(c.version) >= 0


def _check_less_equal(v: semver.Version, c: _Comparator) -> bool:
    if _release_only_mismatch(v, c):
        return False
    con = c.version
    if not c.dirty:
        return v.compare(con) <= 0
    if v.major > con.major:
        return False
    return not (v.major == con.major and v.minor > con.minor and not c.minor_dirty)


def _check_tilde(v: semver.Version, c: _Comparator) -> bool:
    if _release_only_mismatch(v, c):
        return False
    con = c.version
    if v.compare(con) < 0:
        return False
    if c.major_wild or (con == _ZERO and not c.minor_dirty and not c.patch_dirty):
        return True  # ~* and ~0.0.0 accept everything
    if v.major != con.major:
        return False
    return c.minor_dirty or v.minor == con.minor


def _check_tilde_or_equal(v: semver.Version, c: _Comparator) -> bool:
    if _release_only_mismatch(v, c):
        return False
    if c.dirty:
        return _check_tilde(v, c)
    return v.compare(c.version) == 0


def _check_caret(v: semver.Version, c: _Comparator) -> bool:
    if _release_only_mismatch(v, c):
        return False
    con = c.version
    if v.compare(con) < 0:
        return False
    if c.major_wild:
        return True  # ^* accepts everything
    if con.major > 0 or c.minor_dirty:
        return v.major == con.major
    if v.major > 0:
        return False
    if con.minor > 0 or c.patch_dirty:
        return v.minor == con.minor
    if v.minor > 0:
        return False
    return v.patch == con.patch


_CHECKS: dict[str, Callable[[semver.Version, _Comparator], bool]] = {
    "": _check_tilde_or_equal,
    "=": _check_tilde_or_equal,
    "!=": _check_not_equal,
    ">": _check_greater,
    "<": _check_less,
    ">=": _check_greater_equal,
    "=>": _check_greater_equal,
    "<=": _check_less_equal,
    "=<": _check_less_equal,
    "~": _check_tilde,
    "~>": _check_tilde,
    "^": _check_caret,
}


def _invalid(text: str, reason: str) -> FilterError:
    return FilterError(
        f'invalid semver "{text}": invalid semantic version constraint: {reason} '
        "(examples: ^1.40.0, ~1.40.0, >=1.40.0 <1.43.0, >=1.2 || >=2.1)"
    )


def _number(part: str, text: str) -> int:
    if not part.isdigit():
        raise _invalid(text, f'"{part}" is neither a number nor x, X or *')
    return int(part)


def _parse_comparator(token: str, text: str) -> _Comparator:
    match = _TOKEN_RE.match(token)
    if match is None:
        raise _invalid(text, f'improper constraint "{token.strip()}"')
    op, major, minor, patch, pre, build = match.groups()
    minor = minor[1:] if minor else None
    patch = patch[1:] if patch else None
    if pre is not None and not _valid_prerelease(pre):
        raise _invalid(text, f'pre-release "{pre}" has a numeric part with a leading zero')
    literal = token.strip()[len(op) :].strip()
    if _is_x(major):
        version = semver.Version(0, 0, 0, pre)
        return _Comparator(op, version, literal, dirty=True, major_wild=True)
    if minor is None or _is_x(minor):
        version = semver.Version(_number(major, text), 0, 0, pre)
        return _Comparator(op, version, literal, dirty=True, minor_dirty=True)
    if patch is None or _is_x(patch):
        version = semver.Version(_number(major, text), _number(minor, text), 0, pre)
        return _Comparator(op, version, literal, dirty=True, patch_dirty=True)
    version = semver.Version(
        _number(major, text), _number(minor, text), _number(patch, text), pre, build
    )
    return _Comparator(op, version, literal)


def _rewrite_hyphen_ranges(text: str) -> str:
    return _HYPHEN_RE.sub(lambda m: f">= {m.group(1)}, <= {m.group(2)}", text)


def _parse_groups(text: str) -> tuple[tuple[_Comparator, ...], ...]:
    groups = []
    for segment in _rewrite_hyphen_ranges(text).split("||"):
        if not _SEGMENT_RE.match(segment):
            raise _invalid(text, f'improper constraint "{segment.strip()}"')
        tokens = [m.group(0) for m in _FIND_RE.finditer(segment)]
        groups.append(tuple(_parse_comparator(t, text) for t in tokens))
    return tuple(groups)


def _anchors_of(groups: tuple[tuple[_Comparator, ...], ...]) -> tuple[semver.Version, ...]:
    """Inclusive anchors: literals right after >=, <=, => or =< that name one version."""
    anchors: list[semver.Version] = []
    for comp in (c for group in groups for c in group):
        if _is_anchor(comp) and comp.version not in anchors:
            anchors.append(comp.version)
    return tuple(anchors)


def _is_anchor(comp: _Comparator) -> bool:
    return comp.op in _INCLUSIVE_OPS and not comp.major_wild and not _has_wildcard(comp)


def _has_wildcard(comp: _Comparator) -> bool:
    core = comp.literal.split("-", 1)[0].split("+", 1)[0]
    return any(ch in core for ch in "xX*")


@dataclass(frozen=True)
class SemverConstraint:
    """A parsed semver constraint: OR of AND-groups of comparators.

    ``text`` is what the user wrote. ``anchors`` are the inclusive bounds that version
    selection keeps even when they are not the latest patch of their minor (R-3.4).
    An *implicit* constraint comes from a bare version in a filter (``name@1.2.3``).
    """

    text: str
    anchors: tuple[semver.Version, ...]
    implicit: bool
    _groups: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> SemverConstraint:
        """Parse a Masterminds v3 constraint; FilterError on bad syntax."""
        groups = _parse_groups(text)
        return cls(text=text, anchors=_anchors_of(groups), implicit=False, _groups=groups)

    @classmethod
    def implicit_from_version(cls, text: str) -> SemverConstraint:
        """A bare version ``X.Y.Z`` in a filter: ``>=X.Y.Z <X+1.0.0`` (0.x too), no anchors."""
        version = parse_version_lenient(text.strip())
        if version is None:
            raise FilterError(
                f'invalid version "{text}": expected a version such as 1.2.3, v1.2 or 1; '
                "ranges start with an operator (^1.2, ~1.2.3, >=1.2 <1.5), "
                "exact tags with = (=v1.2.3)"
            )
        groups = _parse_groups(f">={version} <{version.major + 1}.0.0")
        return cls(text=text, anchors=(), implicit=True, _groups=groups)

    def matches(self, version: semver.Version) -> bool:
        return any(all(c.matches(version) for c in group) for group in self._groups)

    def lower_bound(self) -> semver.Version:
        """The smallest version literal in the text, operators ignored (R-2.3.1).

        ``>1.0.0 <=1.5.0`` gives 1.0.0; ``>=1.64 <=1.68`` gives 1.64.0. No literal: 0.0.0.
        """
        found: list[semver.Version] = []
        for match in _LITERAL_RE.finditer(self.text):
            version = parse_version_lenient(match.group(0))
            if version is not None:
                found.append(version)
        return min(found, default=_ZERO)

    def __str__(self) -> str:
        return self.text
