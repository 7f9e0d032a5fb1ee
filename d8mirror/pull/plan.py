"""The first stage of a package pull: its plan (R-3.3–R-3.6, R-6.7).

:func:`plan_package` decides which versions of a package to mirror and asks the source what
they resolve to now: the channels (``lts`` when the registry has it), the versions their
``version.json`` names (the small channel images are fetched into the blob store to read it),
the tags a constraint selects (listed, or probed on a proxy registry) and every selected
version's main image digest (manifest HEADs). The resolve task, the dry-run and the CLI's
warm-up all start from it; the fetch (:func:`d8mirror.pull.package.fetch_package`) then
records exactly the digests the plan names.

:func:`planned_images` is the dry-run's listing of a plan: the images a pull would record
that manifest HEADs can find (channels, main, release and VEX images; extra images need the
main images' layers).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from d8mirror.errors import (
    InvalidImageMetadataError,
    MirrorError,
    NotFoundError,
    RegistryError,
)
from d8mirror.imagefs import parse_version_json
from d8mirror.names import vex_ref_for, vex_tag_for
from d8mirror.versions import (
    DEFAULT_CHANNELS,
    LTS_CHANNEL,
    PackageConstraint,
    needs_tag_listing,
    probe_versions,
    proxy_semver_constraints,
    versions_to_mirror,
)

from .fetcher import ImageClosure, ImageFetcher, dedupe
from .options import PullOptions
from .tag_digests import TagDigests


class PackagePullError(MirrorError):
    """A package could not be pulled completely; other packages are unaffected."""


class PackagePlan(BaseModel):
    """What to pull of one package, as the source answered when it was planned."""

    model_config = ConfigDict(frozen=True)

    name: str
    versions: list[str] = Field(description="Versions to mirror, channel versions first.")
    digests: dict[str, str | None] = Field(
        description="Main image digest of every version (None: the tag does not exist)."
    )
    channels: dict[str, str | None] = Field(
        description="Digest of <name>/version:<channel> of every channel (None: absent)."
    )
    tags: TagDigests | None = Field(
        None,
        description="The digests now of every other tag the last fetch of this plan "
        "resolved (release, extra, VEX tags): part of the fetch's identity; None when no "
        "such fetch is recorded.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What planning tolerated (unreadable version.json, missing tag list).",
    )

    def identity(self) -> dict[str, object]:
        """The content a fetch of this plan depends on (a cache key's part; no warnings)."""
        return self.model_dump(mode="json", exclude={"warnings"})


def reads_channels(options: PullOptions, constraint: PackageConstraint | None) -> bool:
    """Whether the pull takes channel images (and their versions): not for extra images
    only, nor for a constraint of exact versions only (R-3.3, R-3.6)."""
    return not options.only_extra_images and not (constraint and constraint.is_exact_only)


def available_channels(fetcher: ImageFetcher, options: PullOptions, name: str) -> list[str]:
    """The five default channels, plus ``lts`` when the registry has it (R-3.3). Only "not
    found" means the registry has no ``lts``: any other error (403, 5xx after the retries)
    fails the plan rather than silently dropping the channel."""
    channels = list(DEFAULT_CHANNELS)
    if fetcher.resolve(options.version_repo(name), LTS_CHANNEL):
        channels.append(LTS_CHANNEL)
    return channels


def channel_version(
    fetcher: ImageFetcher, closure: ImageClosure, ref: str, warnings: list[str]
) -> str | None:
    """The version a channel image's ``version.json`` names; a file that cannot be read as
    one is a warning (the channel then contributes no version), an absent file is not."""
    data = fetcher.read_file(closure, "version.json", top_first_any=False)
    if data is None:
        return None
    try:
        return parse_version_json(data)
    except InvalidImageMetadataError as exc:
        warnings.append(f"channel image {ref}: {exc}")
        return None


def _channel_versions(
    fetcher: ImageFetcher,
    options: PullOptions,
    name: str,
    channels: dict[str, str | None],
    warnings: list[str],
) -> list[str]:
    repo = options.version_repo(name)
    versions: list[str] = []
    for channel, digest in channels.items():
        if digest is None:
            continue
        closure = fetcher.image(repo, digest)
        version = channel_version(fetcher, closure, f"{repo}:{channel}", warnings)
        if version:
            versions.append(version)
    return versions


def _listed_tags(
    fetcher: ImageFetcher,
    options: PullOptions,
    name: str,
    constraint: PackageConstraint | None,
    warnings: list[str],
) -> list[str]:
    """The tags a semver constraint chooses from: listed, or probed on a proxy registry."""
    if not needs_tag_listing(constraint):
        return []
    assert constraint is not None
    repo = options.package_repo(name)
    if options.proxy_registry:
        tags: list[str] = []
        for sub in proxy_semver_constraints(constraint, name):
            tags += probe_versions(
                sub,
                lambda tag: fetcher.resolve(repo, tag) is not None,
                should_stop=fetcher.should_stop,
            )
        return tags
    try:
        return fetcher.list_tags(repo)
    except NotFoundError:
        warnings.append(f"Skipping tag list for package {name}: repository not found")
        return []
    except RegistryError as exc:
        raise PackagePullError(f"list tags for package {name}: {exc}") from exc


def plan_package(fetcher: ImageFetcher, options: PullOptions, name: str) -> PackagePlan:
    """The plan of ``name`` (see the module docstring); its tags are left to the caller."""
    constraint = options.package_filter.constraint_for(name)
    version_repo, repo = options.version_repo(name), options.package_repo(name)
    warnings: list[str] = []
    channels = {
        c: fetcher.resolve(version_repo, c) for c in available_channels(fetcher, options, name)
    }
    from_channels = (
        _channel_versions(fetcher, options, name, channels, warnings)
        if reads_channels(options, constraint)
        else []
    )
    tags = _listed_tags(fetcher, options, name, constraint, warnings)
    versions = dedupe([*from_channels, *versions_to_mirror(constraint, tags)])
    return PackagePlan(
        name=name,
        versions=versions,
        digests={v: fetcher.resolve(repo, v) for v in versions},
        channels=channels,
        warnings=warnings,
    )


def planned_images(fetcher: ImageFetcher, options: PullOptions, plan: PackagePlan) -> list[str]:
    """The dry-run's listing of ``plan`` (R-6.7): channel images, then per version its main
    image when it exists, its release image and its VEX attestation (manifest HEADs)."""
    name = plan.name
    repo, version_repo = options.package_repo(name), options.version_repo(name)
    refs: list[str] = []
    if reads_channels(options, options.package_filter.constraint_for(name)):
        refs += [options.ref(version_repo, channel) for channel in plan.channels]
    if options.only_extra_images:
        return refs
    for version in plan.versions:
        if plan.digests.get(version) is None:
            continue
        ref = options.ref(repo, version)
        refs.append(ref)
        if fetcher.resolve(version_repo, version):
            refs.append(options.ref(version_repo, version))
        if not options.skip_vex_images and fetcher.resolve(repo, vex_tag_for(ref)):
            refs.append(vex_ref_for(ref))
    return refs


def render_dry_run_plan(name: str, planned: list[str], versions: list[str]) -> str:
    """The dry-run plan of one package, in d8's words (R-6.7): the images that would be
    pulled, one per line."""
    lines = [
        f"[dry-run] Package '{name}' images that would be pulled:",
        *[f"  {ref}" for ref in planned],
    ]
    if versions:
        lines.append("  (extra images discovery requires a real pull)")
    return "\n".join(lines)
