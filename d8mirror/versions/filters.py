"""Package filters: ``--include-package`` / ``--exclude-package NAME[@CONSTRAINT]`` (R-3.1, R-3.2).

Grammar of one expression (whitespace around name and constraint is trimmed)::

    NAME                  bare include: channels only, no version constraint
    NAME@=TAG[+CHANNEL]   exact tag (any string; "=>1.2.0" is the literal tag ">1.2.0"),
                          optionally aliased to one channel; an unknown channel is dropped
    NAME@<op>...          op in > < ~ ^: a Masterminds v3 semver constraint
    NAME@X.Y.Z            implicit: >=X.Y.Z <X+1.0.0 (also for 0.x), no anchors

Repeating a name OR-combines its constraints; a bare entry adds nothing to a pinned one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from d8mirror.errors import EmptyConstraintError, FilterError
from d8mirror.reference import is_valid_component, is_valid_tag
from d8mirror.versions.channels import ALL_CHANNELS, is_valid_channel
from d8mirror.versions.semver_constraints import SemverConstraint

INCLUDE_FLAG = "--include-package"
EXCLUDE_FLAG = "--exclude-package"
_SEMVER_FIRST_CHARS = frozenset("><~^")


@dataclass(frozen=True)
class ExactTag:
    """``=tag[+channel]``: one tag pulled as is; ``channel`` gets aliased to it (R-4)."""

    tag: str
    channel: str | None = None

    def __str__(self) -> str:
        return f"={self.tag}" + (f"+{self.channel}" if self.channel else "")


@dataclass(frozen=True)
class PackageConstraint:
    """The OR-merged constraint of one package: exact tags and semver constraints."""

    exacts: tuple[ExactTag, ...] = ()
    semvers: tuple[SemverConstraint, ...] = ()

    @property
    def is_exact_only(self) -> bool:
        """Only exact tags: no channel versions, no tag listing, channel aliases apply."""
        return bool(self.exacts) and not self.semvers

    @property
    def has_channel_alias(self) -> bool:
        return any(e.channel is not None for e in self.exacts)

    def merged(self, other: PackageConstraint) -> PackageConstraint:
        """OR-combine (identical sub-constraints are kept once)."""
        exacts = tuple(dict.fromkeys((*self.exacts, *other.exacts)))
        semvers = tuple(dict.fromkeys((*self.semvers, *other.semvers)))
        return PackageConstraint(exacts, semvers)

    def alias_targets(self) -> list[tuple[str, tuple[str, ...]]]:
        """R-4 steps 1–3: ``[(tag, channels)]`` in declaration order.

        Not exact-only: ``[]``. One exact without ``+channel``: all six channels.
        ``+channel``: just that channel. Several exacts: plain ones get ``()``.
        """
        if not self.is_exact_only:
            return []
        propagate_to_all = len(self.exacts) == 1 and self.exacts[0].channel is None
        targets: list[tuple[str, tuple[str, ...]]] = []
        for exact in self.exacts:
            if exact.channel is not None:
                targets.append((exact.tag, (exact.channel,)))
            else:
                targets.append((exact.tag, ALL_CHANNELS if propagate_to_all else ()))
        return targets

    def __str__(self) -> str:
        return " || ".join([*(str(e) for e in self.exacts), *(s.text for s in self.semvers)])


@dataclass(frozen=True)
class ParsedExpression:
    """One ``NAME[@CONSTRAINT]`` flag value, parsed."""

    expression: str
    name: str
    constraint: PackageConstraint | None
    warnings: tuple[str, ...] = ()


def parse_constraint(text: str) -> PackageConstraint:
    """Parse what follows ``@`` (already trimmed, non-empty); FilterError when invalid."""
    if text.startswith("="):
        return PackageConstraint(exacts=(_parse_exact(text[1:]),))
    if text[0] in _SEMVER_FIRST_CHARS:
        return PackageConstraint(semvers=(SemverConstraint.parse(text),))
    return PackageConstraint(semvers=(SemverConstraint.implicit_from_version(text),))


def _parse_exact(body: str) -> ExactTag:
    tag, _, channel = body.partition("+")
    tag = tag.strip()
    if not tag:
        raise FilterError(f'empty tag in "{body}": write the tag after "=", e.g. =v1.2.3')
    channel = channel.strip()
    return ExactTag(tag, channel if is_valid_channel(channel) else None)


def parse_expression(expression: str, flag: str = INCLUDE_FLAG) -> ParsedExpression:
    """Parse one flag value; errors name the flag and the value."""
    text = expression.strip()
    name, has_at, constraint_text = text.partition("@")
    name = name.strip()
    if not name:
        raise FilterError(f'Malformed filter expression "{expression}": empty name')
    if not is_valid_component(name):
        raise FilterError(
            f'{flag} "{expression}": invalid package name "{name}": use lowercase letters, '
            "digits and single separators (., _, -), as in the registry path"
        )
    if not has_at:
        return ParsedExpression(expression, name, None)
    constraint_text = constraint_text.strip()
    if not constraint_text:
        raise EmptyConstraintError(flag, expression)
    try:
        constraint = parse_constraint(constraint_text)
    except FilterError as exc:
        raise FilterError(f'{flag} "{expression}": {exc}') from exc
    warnings = _exact_tag_warnings(flag, expression, constraint_text, constraint)
    return ParsedExpression(expression, name, constraint, warnings)


def _exact_tag_warnings(
    flag: str, expression: str, text: str, constraint: PackageConstraint
) -> tuple[str, ...]:
    out: list[str] = []
    for exact in constraint.exacts:
        _, plus, suffix = text.partition("+")
        if plus and exact.channel is None:
            out.append(
                f'{flag} "{expression}": "{suffix.strip()}" is not a channel '
                f"({', '.join(ALL_CHANNELS)}); the +suffix is ignored"
            )
        if not is_valid_tag(exact.tag):
            hint = f'; did you mean ">={exact.tag[1:]}"?' if exact.tag.startswith(">") else ""
            out.append(
                f'{flag} "{expression}": "{exact.tag}" is pinned as a literal tag but is not '
                f"a valid tag, so it can never be found{hint}"
            )
    return tuple(out)


def _merge(
    current: PackageConstraint | None, new: PackageConstraint | None
) -> PackageConstraint | None:
    if current is None:
        return new
    if new is None:
        return current
    return current.merged(new)


@dataclass(frozen=True)
class PackageFilter:
    """Which packages to mirror, and each one's version constraint.

    Whitelist (``--include-package`` given): only listed names; an empty whitelist matches
    nothing. Blacklist (default): every name but the listed ones; its constraints are
    parsed and validated, then ignored (the whole package is excluded) with a warning.
    """

    is_whitelist: bool = False
    entries: Mapping[str, PackageConstraint | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @classmethod
    def from_flags(cls, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> PackageFilter:
        if include and exclude:
            raise FilterError(
                f"{INCLUDE_FLAG} and {EXCLUDE_FLAG} are mutually exclusive: "
                "list the packages to mirror, or the ones to skip, not both"
            )
        is_whitelist = bool(include)
        flag = INCLUDE_FLAG if is_whitelist else EXCLUDE_FLAG
        entries: dict[str, PackageConstraint | None] = {}
        notes: list[str] = []
        for expression in include if is_whitelist else exclude:
            parsed = parse_expression(expression, flag)
            entries[parsed.name] = _merge(entries.get(parsed.name), parsed.constraint)
            notes.extend(parsed.warnings)
            if not is_whitelist and parsed.constraint is not None:
                notes.append(
                    f"{flag} {expression.strip()}: version constraints in {flag} are ignored; "
                    "the whole package is excluded"
                )
        return cls(is_whitelist, entries, tuple(notes))

    def matches(self, name: str) -> bool:
        return (name in self.entries) == self.is_whitelist

    def constraint_for(self, name: str) -> PackageConstraint | None:
        """None means no version constraint (bare include, blacklist mode, unlisted)."""
        if not self.is_whitelist:
            return None
        return self.entries.get(name)

    def whitelist_names(self) -> list[str]:
        """The included names, sorted (how --proxy-registry finds packages); [] for a blacklist."""
        return sorted(self.entries) if self.is_whitelist else []

    def warnings(self) -> list[str]:
        return list(self.notes)

    def require_whitelist_for_proxy(self) -> None:
        """Q5: --proxy-registry cannot list the catalog, so packages must be named."""
        if not self.is_whitelist:
            raise FilterError(
                f"--proxy-registry requires a whitelist of packages ({INCLUDE_FLAG}): a proxy "
                f"cannot list the packages catalog; name them with {INCLUDE_FLAG} "
                "NAME[@CONSTRAINT], or skip packages with --no-packages"
            )
