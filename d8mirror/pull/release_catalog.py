"""``package-versions.tar`` content of one package (R-6.9): its channels, their versions
and every tag of ``<name>/version``, pulled into one layout."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from d8mirror.errors import NotFoundError, RegistryError
from d8mirror.layout import Layout

from .fetcher import ImageFetcher, dedupe
from .options import PullOptions
from .plan import available_channels, channel_version


class ReleaseCatalog(BaseModel):
    """The release images of one package, pulled into ``layout`` (a Prefect task result)."""

    name: str
    layout: str = Field(description="The layout directory (version/ of the package).")
    images: int = 0
    warnings: list[str] = Field(default_factory=list)


def pull_release_catalog(
    fetcher: ImageFetcher, options: PullOptions, name: str, layout_dir: Path
) -> ReleaseCatalog:
    """Pull every release image of ``name`` into ``layout_dir`` (this run's only). A tag list
    that fails (other than "not found") and unreadable ``version.json`` files are warnings;
    the channels' lookup fails the catalog on anything but "not found", as a plan does."""
    repo = options.version_repo(name)
    layout = Layout.recreate(layout_dir)  # this run's catalog only, never last run's
    warnings: list[str] = []
    channels = available_channels(fetcher, options, name)
    tags = list(channels)
    for channel in channels:
        digest = fetcher.resolve(repo, channel)
        if digest is None:
            continue
        closure = fetcher.pull_into(
            layout, repo, digest, short_tag=channel, ref_name=options.ref(repo, channel)
        )
        version = channel_version(fetcher, closure, f"{repo}:{channel}", warnings)
        if version:
            tags.append(version)
    try:
        tags += fetcher.list_tags(repo)
    except NotFoundError:
        pass  # no release repository: nothing more to take
    except RegistryError as exc:
        warnings.append(f"list tags of {repo}: {exc}")
    fetcher.prefetch([(repo, tag) for tag in dedupe(tags) if layout.find(tag) is None])
    for tag in dedupe(tags):
        if layout.find(tag) is not None:
            continue
        digest = fetcher.resolve(repo, tag)
        if digest:
            fetcher.pull_into(layout, repo, digest, short_tag=tag, ref_name=options.ref(repo, tag))
    layout.sort()
    return ReleaseCatalog(
        name=name, layout=str(layout_dir), images=len(layout.entries()), warnings=warnings
    )
