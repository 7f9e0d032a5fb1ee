"""Routing (spec §8.3, Part A Q1): the path of a layout in the bundle is its registry path.

Every directory of the unified tree holding an ``index.json`` is a layout; its registry
segment is its path relative to the tree. The only translations are the ``packages`` and
``modules`` path-suffix remaps: the leading ``packages`` (``modules``) segment is replaced by
the normalised suffix, where ``/`` means the target repository itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from d8mirror.errors import ConfigError
from d8mirror.reference import Repository, is_valid_repository

PACKAGES_SEGMENT = "packages"
MODULES_SEGMENT = "modules"
DEFAULT_PACKAGES_PATH_SUFFIX = "/packages"
DEFAULT_MODULES_PATH_SUFFIX = "/modules"


def normalize_path_suffix(suffix: str | None, default_segment: str) -> str:
    """``NormalizeModulesPath``: empty → the default segment; ``/`` → root (``""``)."""
    if suffix is None or suffix == "":
        return default_segment
    normalised = suffix.strip().strip("/")
    if normalised and not is_valid_repository(normalised):
        raise ConfigError(f"invalid path suffix {suffix!r}: path components can only contain "
                          "lowercase letters, digits and separators (., _, __, -)")
    return normalised


def parse_target(text: str) -> Repository:
    """The registry argument ``host[:port]/path`` (scheme stripped; a path is required)."""
    return Repository.parse(text)


@dataclass(frozen=True)
class Router:
    """Maps a layout's path in the bundle to the repository path it is pushed to."""

    packages_path: str = PACKAGES_SEGMENT
    modules_path: str = MODULES_SEGMENT

    @classmethod
    def from_suffixes(cls, packages_suffix: str | None = DEFAULT_PACKAGES_PATH_SUFFIX,
                      modules_suffix: str | None = DEFAULT_MODULES_PATH_SUFFIX) -> Router:
        return cls(normalize_path_suffix(packages_suffix, PACKAGES_SEGMENT),
                   normalize_path_suffix(modules_suffix, MODULES_SEGMENT))

    def segment(self, layout_rel: str) -> str:
        """Registry segment of a layout (``/``-separated, root = ``""``)."""
        head, _, rest = layout_rel.partition("/")
        if head == PACKAGES_SEGMENT:
            return _join(self.packages_path, rest)
        if head == MODULES_SEGMENT:
            return _join(self.modules_path, rest)
        return layout_rel

    def repository(self, target: Repository, layout_rel: str) -> Repository:
        """The full target repository of a layout."""
        segment = self.segment(layout_rel)
        return target.child(segment) if segment else target

    def packages_index(self, target: Repository) -> Repository:
        """Where discovery tags of packages go: ``<registry>/<packages path>``."""
        return target.child(self.packages_path) if self.packages_path else target


def _join(base: str, rest: str) -> str:
    return "/".join(part for part in (base, rest) if part)


def find_layouts(root: Path) -> list[str]:
    """Relative paths (``/``-separated, root = ``""``) of every dir holding ``index.json``."""
    found = []
    for index in root.rglob("index.json"):
        if index.is_file() and not index.is_symlink():
            rel = index.parent.relative_to(root).as_posix()
            found.append("" if rel == "." else rel)
    return sorted(found)
