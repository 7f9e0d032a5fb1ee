"""The tags a package fetch resolves, with their digests: the part of a fetch's identity that
its plan cannot name in advance.

A plan (the resolve step) holds the package's versions, their main digests and its channels.
The fetch also resolves tags the plan does not name: release images ``version:vX.Y.Z``, extra
images' tags (named by ``extra_images.json`` inside the main images), VEX ``<tag>.att``
attestations (re-published without any version change), proxy probes. Which tags those are
follows from the main images, so it is known once a fetch of the same plan ran: the fetch
records them (:func:`write_record`), and the next plan with the same versions and digests
resolves exactly those tags again with manifest HEADs, several at once
(:func:`current_digests`). A cached fetch is reused only when every one of them still
resolves to the digest it had (an absent one still absent). Internal images are pulled by
digest from ``images_digests.json`` inside the main images: the main digests cover them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from d8mirror.files import write_text_atomic

from .fetcher import ImageFetcher

#: ``[repository, tag, digest or None]`` rows, sorted by repository and tag (JSON-able).
TagDigests = list[list[str | None]]


def _rows(answers: Iterable[tuple[tuple[str, str], str | None]]) -> TagDigests:
    return [[repo, tag, digest] for (repo, tag), digest in sorted(answers, key=lambda a: a[0])]


def tag_digests(fetcher: ImageFetcher) -> TagDigests:
    """Every tag ``fetcher`` resolved (or was told by the plan), with its answer."""
    return _rows(fetcher.resolved().items())


def current_digests(fetcher: ImageFetcher, refs: Iterable[tuple[str, str]]) -> TagDigests:
    """``refs`` resolved now (those ``fetcher`` already knows cost no request)."""
    wanted = list(dict.fromkeys(refs))
    fetcher.resolve_many(wanted)
    known = fetcher.resolved()
    return _rows((ref, known[ref]) for ref in wanted)


def read_record(path: Path, plan_key: str) -> list[tuple[str, str]] | None:
    """The tags the last fetch of the plan ``plan_key`` resolved; None when no fetch of that
    plan is recorded (or the record is unreadable)."""
    try:
        doc = json.loads(path.read_text())
        if doc["plan"] != plan_key:
            return None
        return [(str(repo), str(tag)) for repo, tag, _digest in doc["tags"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(path: Path, plan_key: str, tags: TagDigests) -> None:
    """Record what a fetch of the plan ``plan_key`` resolved (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"plan": plan_key, "tags": tags}, sort_keys=True))
