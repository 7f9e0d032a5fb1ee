"""Discovery index tags (R-8.5, Q1, Q18).

After all layouts: for every directory directly under ``unified/modules/``,
``unified/packages/`` and ``unified/deckhouse-cli/plugins/``, tag a deterministic tiny image as
``<registry>/<modules path>:<name>``, ``<registry>/<packages path>:<name>`` and
``<registry>/deckhouse-cli/plugins:<name>``. Order: modules, packages, plugins; names sorted.

A discovery tag announces a complete item, so it is pushed only for an item all of whose
layouts landed (:func:`split_landed`): the reference aborts before any discovery tag when a
layout fails; d8mirror tags the complete items and withholds the others, which a rerun of the
push completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.names import MODULES, PACKAGES, PLUGINS
from d8mirror.push import tinyimage
from d8mirror.push.routing import Router
from d8mirror.reference import Repository
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

log = logging.getLogger("d8mirror.push")

DISCOVERY_LABEL = "d8mirror discovery index"


class DiscoveryTag(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str = Field(description='"modules", "packages" or "plugins".')
    repository: str = Field(description="Path on the target registry.")
    tag: str
    digest: str

    @property
    def tree_dir(self) -> str:
        """The item's directory in the unified tree (``packages/<name>``)."""
        return f"{_TREE_DIRS[self.kind]}/{self.tag}"


_TREE_DIRS = {"modules": MODULES, "packages": PACKAGES, "plugins": PLUGINS}


def split_landed(
    tags: list[DiscoveryTag],
    not_landed: Iterable[str],
) -> tuple[list[DiscoveryTag], list[DiscoveryTag]]:
    """(tags to push, tags withheld): a tag is withheld when any layout of its item (tree path
    ``<dir>`` or under ``<dir>/``) is in ``not_landed`` (failed, cancelled or not verified)."""
    missing = [rel.strip("/") for rel in not_landed]
    keep: list[DiscoveryTag] = []
    withheld: list[DiscoveryTag] = []
    for tag in tags:
        base = tag.tree_dir
        hit = any(rel == base or rel.startswith(base + "/") for rel in missing)
        (withheld if hit else keep).append(tag)
    return keep, withheld


def plan_discovery_tags(unified: Path, target: Repository, router: Router) -> list[DiscoveryTag]:
    """Every discovery tag the tree calls for, in push order."""
    digest = tinyimage.build(DISCOVERY_LABEL).digest
    groups = [
        ("modules", MODULES, router.repository(target, MODULES)),
        ("packages", PACKAGES, router.packages_index(target)),
        ("plugins", PLUGINS, target.child(PLUGINS)),
    ]
    out = []
    for kind, rel, repository in groups:
        directory = unified / rel
        if not directory.is_dir():
            log.info("No %s directory found, skipping %s index", kind, kind)
            continue
        for name in sorted(p.name for p in directory.iterdir() if p.is_dir()):
            out.append(DiscoveryTag(kind=kind, repository=repository.path, tag=name, digest=digest))
    return out


def push_discovery_tags(
    client: RegistryClient,
    tags: list[DiscoveryTag],
    *,
    on_pushed: Callable[[DiscoveryTag], None] | None = None,
    retry: RetryPolicy | None = None,
) -> int:
    """Push the tags; returns how many were (re)written (already-correct tags are skipped).
    Each tag's push is retried as a whole on transient errors (it is idempotent)."""
    policy = retry or default_policy()
    image = tinyimage.build(DISCOVERY_LABEL)
    written = 0
    for tag in tags:
        if policy.call(
            partial(tinyimage.push, client, tag.repository, tag.tag, image),
            what=f"push discovery tag {tag.repository}:{tag.tag}",
        ):
            written += 1
        if on_pushed is not None:
            on_pushed(tag)
    return written
