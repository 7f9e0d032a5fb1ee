"""Which descriptor each short tag of a layout pushes (R-8.4, Q2).

One short tag may be given several digests by a merged ``index.json``
(:mod:`d8mirror.push.index_merge`); :func:`resolve_short_tags` picks one per tag and names
every such conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from d8mirror.layout import IndexEntry


@dataclass(frozen=True)
class TagConflict:
    """One short tag given several digests; ``chosen`` is the digest that will be pushed."""

    short_tag: str
    digests: tuple[str, ...]
    chosen: str
    by_preference: bool

    def describe(self) -> str:
        others = ", ".join(d for d in self.digests if d != self.chosen)
        why = "it came from the package's own archive" if self.by_preference else "last wins"
        return (
            f"tag {self.short_tag} has {len(self.digests)} digests; pushing {self.chosen} "
            f"({why}), ignoring {others}"
        )


class ShortTagResolution(Mapping[str, IndexEntry]):
    """short tag → descriptor to push (sorted by tag), plus ``conflicts`` and ``untagged``."""

    def __init__(
        self,
        chosen: Mapping[str, IndexEntry],
        conflicts: Sequence[TagConflict],
        untagged: Sequence[IndexEntry],
    ) -> None:
        self._chosen = dict(sorted(chosen.items()))
        self.conflicts: tuple[TagConflict, ...] = tuple(conflicts)
        self.untagged: tuple[IndexEntry, ...] = tuple(untagged)

    def __getitem__(self, key: str) -> IndexEntry:
        return self._chosen[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._chosen)

    def __len__(self) -> int:
        return len(self._chosen)


def resolve_short_tags(
    entries: Sequence[IndexEntry],
    preferred: Callable[[IndexEntry], bool] | None = None,
) -> ShortTagResolution:
    """Which descriptor each short tag pushes (R-8.4 + Q2).

    Default: the last in index order. When a short tag has several digests and ``preferred``
    marks some of its descriptors, the last preferred one wins. Entries without a short tag are
    skipped and listed in ``untagged``; every tag with several digests is one conflict.
    """
    groups: dict[str, list[IndexEntry]] = {}
    untagged: list[IndexEntry] = []
    for entry in entries:
        if entry.short_tag:
            groups.setdefault(entry.short_tag, []).append(entry)
        else:
            untagged.append(entry)
    chosen: dict[str, IndexEntry] = {}
    conflicts: list[TagConflict] = []
    for tag in sorted(groups):
        group = groups[tag]
        winner, by_preference = group[-1], False
        digests = tuple(dict.fromkeys(e.digest for e in group))
        if len(digests) > 1 and preferred is not None:
            favourites = [e for e in group if preferred(e)]
            if favourites and favourites[-1].digest != winner.digest:
                winner, by_preference = favourites[-1], True
        chosen[tag] = winner
        if len(digests) > 1:
            conflicts.append(TagConflict(tag, digests, winner.digest, by_preference))
    return ShortTagResolution(chosen, conflicts, untagged)
