"""Routing (R-8.3, Q1): the path of a layout in the bundle is its registry path.

Every directory of the unified tree holding an ``index.json`` is a layout; its registry
segment is its path relative to the tree. The only translations are the ``packages`` and
``modules`` path-suffix remaps: the leading ``packages`` (``modules``) segment is replaced by
the normalised suffix (:func:`d8mirror.names.normalize_path_suffix`), where ``/`` means the
target repository itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from d8mirror.names import (
    DEFAULT_MODULES_PATH,
    DEFAULT_PACKAGES_PATH,
    MODULES,
    PACKAGES,
    normalize_path_suffix,
)
from d8mirror.reference import Repository


def parse_target(text: str) -> Repository:
    """The registry argument ``host[:port]/path`` (scheme stripped; a path is required)."""
    return Repository.parse(text)


@dataclass(frozen=True)
class Router:
    """Maps a layout's path in the bundle to the repository path it is pushed to."""

    packages_path: str = PACKAGES
    modules_path: str = MODULES

    @classmethod
    def from_suffixes(
        cls,
        packages_suffix: str | None = DEFAULT_PACKAGES_PATH,
        modules_suffix: str | None = DEFAULT_MODULES_PATH,
    ) -> Router:
        return cls(
            normalize_path_suffix(packages_suffix, PACKAGES, flag="--packages-path-suffix"),
            normalize_path_suffix(modules_suffix, MODULES, flag="--modules-path-suffix"),
        )

    def segment(self, layout_rel: str) -> str:
        """Registry segment of a layout (``/``-separated, root = ``""``)."""
        head, _, rest = layout_rel.partition("/")
        if head == PACKAGES:
            return _join(self.packages_path, rest)
        if head == MODULES:
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
