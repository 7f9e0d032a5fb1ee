"""Pull one package into its working directory (spec §3.5, §4, §5, §6.6, §1.4, §1.5).

Working dir ``<work>/``: the main layout at its root, ``version/``, ``extra/<name>/``.
Order: channel images → versions → main images → release images → internal digest images →
extra images → VEX → completeness check → sort → channel aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.errors import (
    InvalidImageMetadataError,
    MirrorError,
    NotFoundError,
    RegistryError,
)
from d8mirror.imagefs import (
    images_digests_problem,
    parse_extra_images_json,
    parse_images_digests,
    parse_version_json,
)
from d8mirror.layout import Layout, alias_ref_name
from d8mirror.versions import (
    DEFAULT_CHANNELS,
    LTS_CHANNEL,
    PackageConstraint,
    needs_tag_listing,
    probe_versions,
    proxy_semver_constraints,
    versions_to_mirror,
)

from .fetcher import FetchCancelled, ImageClosure, ImageFetcher, dedupe
from .options import PullOptions
from .segments import EXTRA, VERSION, VEX_SUFFIX, vex_ref_for, vex_tag_for


class PackagePullError(MirrorError):
    """A package could not be pulled completely; other packages are unaffected."""


@dataclass
class PackageResult:
    """Small, JSON-able outcome of one package pull."""

    name: str
    work_dir: str
    versions: list[str] = field(default_factory=list)
    images: int = 0
    vex: int = 0
    planned: list[str] = field(default_factory=list)      # refs (dry-run plan, or what was pulled)
    warnings: list[str] = field(default_factory=list)
    blobs_fetched: int = 0
    bytes_fetched: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Layouts:
    main: Layout
    version: Layout
    root: Path
    extras: dict[str, Layout] = field(default_factory=dict)

    def extra(self, name: str) -> Layout:
        if name not in self.extras:
            self.extras[name] = Layout.create(self.root / EXTRA / name)
        return self.extras[name]

    def all(self) -> list[Layout]:
        return [self.main, self.version, *[self.extras[k] for k in sorted(self.extras)]]


def render_dry_run_plan(name: str, planned: list[str], versions: list[str]) -> str:
    """The dry-run plan of one package, in d8's words (§6.7): the images that would be
    pulled, one per line."""
    lines = [f"[dry-run] Package '{name}' images that would be pulled:",
             *[f"  {ref}" for ref in planned]]
    if versions:
        lines.append("  (extra images discovery requires a real pull)")
    return "\n".join(lines)


def channel_version(fetcher: ImageFetcher, closure: ImageClosure, ref: str,
                    warnings: list[str]) -> str | None:
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


class PackagePuller:
    """Pulls packages with one fetcher; one instance per source registry and run."""

    def __init__(self, fetcher: ImageFetcher, options: PullOptions,
                 log: Callable[[str], None] | None = None) -> None:
        self.fetcher = fetcher
        self.options = options
        self.log = log or (lambda _msg: None)

    # -- channels and versions ----------------------------------------------------------------
    def channels(self, name: str) -> list[str]:
        """The five default channels, plus ``lts`` when the registry has it (§3.3)."""
        channels = list(DEFAULT_CHANNELS)
        try:
            if self.fetcher.resolve(self.options.version_repo(name), LTS_CHANNEL):
                channels.append(LTS_CHANNEL)
        except RegistryError:
            pass
        return channels

    def channel_versions(self, name: str, result: PackageResult,
                         layouts: _Layouts | None) -> list[str]:
        repo = self.options.version_repo(name)
        versions: list[str] = []
        for channel in self.channels(name):
            if layouts is None:
                result.planned.append(self.options.ref(repo, channel))
            digest = self.fetcher.resolve(repo, channel)
            if digest is None:
                continue
            if layouts is not None:
                closure = self.fetcher.pull_into(layouts.version, repo, digest, short_tag=channel,
                                                 ref_name=self.options.ref(repo, channel))
            else:
                closure = self.fetcher.image(repo, digest)
            version = channel_version(self.fetcher, closure, f"{repo}:{channel}",
                                      result.warnings)
            if version:
                versions.append(version)
        return versions

    def listed_tags(self, name: str, constraint: PackageConstraint | None,
                    result: PackageResult) -> list[str]:
        if not needs_tag_listing(constraint):
            return []
        assert constraint is not None
        repo = self.options.package_repo(name)
        if self.options.proxy_registry:
            tags: list[str] = []
            for sub in proxy_semver_constraints(constraint, name):
                tags += probe_versions(sub, lambda tag: self.fetcher.resolve(repo, tag) is not None,
                                       should_stop=self.fetcher.should_stop)
            return tags
        try:
            return self.fetcher.list_tags(repo)
        except NotFoundError:
            result.warnings.append(f"Skipping tag list for package {name}: repository not found")
            return []
        except RegistryError as exc:
            raise PackagePullError(f"list tags for package {name}: {exc}") from exc

    def resolve_versions(self, name: str, constraint: PackageConstraint | None,
                         result: PackageResult, layouts: _Layouts | None) -> list[str]:
        channel_versions: list[str] = []
        if not self.options.only_extra_images and not (constraint and constraint.is_exact_only):
            channel_versions = self.channel_versions(name, result, layouts)
        tags = self.listed_tags(name, constraint, result)
        return dedupe([*channel_versions, *versions_to_mirror(constraint, tags)])

    # -- the pull -----------------------------------------------------------------------------
    def pull(self, name: str, constraint: PackageConstraint | None,
             work_dir: Path) -> PackageResult:
        """Pull ``name`` into ``work_dir``; a dry-run only plans (reads metadata, no layout)."""
        result = PackageResult(name=name, work_dir=str(work_dir))
        before = (self.fetcher.stats.blobs_fetched, self.fetcher.stats.bytes_fetched)
        layouts = None
        if not self.options.dry_run:
            # This run's plan only: a previous run's layouts (and index entries) are dropped.
            layouts = _Layouts(main=Layout.recreate(work_dir),
                               version=Layout.create(work_dir / VERSION), root=work_dir)
        result.versions = self.resolve_versions(name, constraint, result, layouts)
        if layouts is None:
            self._plan(name, result)
            return result
        self._pull_content(name, constraint, result, layouts)
        planned_missing = self._completeness(layouts, result)
        if planned_missing:
            raise PackagePullError(
                f"pulled layout of package {name} is incomplete: {len(planned_missing)} planned "
                f"images missing: {', '.join(planned_missing)}")
        for layout in layouts.all():
            layout.sort()
        if not self.options.only_extra_images:
            self.apply_aliases(name, constraint, layouts.version, result)
        result.images = sum(len(layout.entries()) for layout in layouts.all())
        result.vex = sum(1 for e in layouts.main.entries()
                         if (e.short_tag or "").endswith(VEX_SUFFIX))
        result.blobs_fetched = self.fetcher.stats.blobs_fetched - before[0]
        result.bytes_fetched = self.fetcher.stats.bytes_fetched - before[1]
        return result

    def _plan(self, name: str, result: PackageResult) -> None:
        """Dry-run plan: main images that exist, their release images and VEX attestations
        (all found with manifest HEADs only; extra images need layer blobs)."""
        repo, version_repo = self.options.package_repo(name), self.options.version_repo(name)
        for version in result.versions:
            if self.fetcher.resolve(repo, version) is None:
                continue
            if self.options.only_extra_images:
                continue
            result.planned.append(self.options.ref(repo, version))
            if self.fetcher.resolve(version_repo, version):
                result.planned.append(self.options.ref(version_repo, version))
            ref = self.options.ref(repo, version)
            if not self.options.skip_vex_images and self.fetcher.resolve(repo, vex_tag_for(ref)):
                result.planned.append(vex_ref_for(ref))

    def _pull_content(self, name: str, constraint: PackageConstraint | None,
                      result: PackageResult, layouts: _Layouts) -> None:
        """Images in waves: each wave is prefetched several at once into the blob store, then
        recorded in order (layouts, warnings and errors stay deterministic)."""
        repo = self.options.package_repo(name)
        self._expected: dict[str, set[str]] = {}
        wave = [(repo, v) for v in result.versions]
        if not self.options.only_extra_images:
            wave += [(self.options.version_repo(name), v) for v in result.versions]
        self.fetcher.prefetch(wave)
        main_closures: dict[str, ImageClosure] = {}
        vex_inputs: list[str] = []
        for version in result.versions:
            digest = self.fetcher.resolve(repo, version)
            if not self.options.only_extra_images:   # §3.6: VEX of the extras only
                vex_inputs.append(self.options.ref(repo, version))
            if digest is None:
                if constraint and any(e.tag == version for e in constraint.exacts):
                    result.warnings.append(f"pinned version {version} of package {name} "
                                           "was not found in the source registry")
                continue
            closure = self.fetcher.image(repo, digest)
            main_closures[version] = closure
            if not self.options.only_extra_images:
                self._add(layouts.main, repo, digest, version, result)
        internal: list[str] = []
        if not self.options.only_extra_images:
            self._release_images(name, result, layouts)
            internal = self._internal_digests(name, main_closures, result)
        extras = self._wanted_extras(main_closures)
        self.fetcher.prefetch([(repo, d) for d in internal] + [
            (self.options.extra_repo(name, extra), tag)
            for extra, tags in extras.items() for tag in tags])
        vex_inputs += self._internal_images(repo, internal, result, layouts)
        vex_inputs += self._extra_images(name, extras, result, layouts)
        if not self.options.skip_vex_images:
            self._vex_images(name, vex_inputs, result, layouts)

    def _add(self, layout: Layout, repo: str, digest: str, tag: str,
             result: PackageResult) -> None:
        ref = self.options.ref(repo, tag)
        short_tag = tag.split(":", 1)[1] if tag.startswith("sha256:") else tag
        self.fetcher.pull_into(layout, repo, digest, short_tag=short_tag, ref_name=ref)
        self._expected.setdefault(str(layout.path), set()).add(short_tag)

    def _release_images(self, name: str, result: PackageResult, layouts: _Layouts) -> None:
        """Step 3: ``version:vX.Y.Z`` images; failures are warnings (Part A Q11)."""
        repo = self.options.version_repo(name)
        for version in result.versions:
            try:
                digest = self.fetcher.resolve(repo, version)
                if digest:
                    self._add(layouts.version, repo, digest, version, result)
            except FetchCancelled:
                raise
            except MirrorError as exc:
                result.warnings.append(f"release image {repo}:{version}: {exc}")

    def _internal_digests(self, name: str, closures: dict[str, ImageClosure],
                          result: PackageResult) -> list[str]:
        """Step 4's digests, from ``images_digests.json``; failures are warnings (Q11)."""
        digests: list[str] = []
        for version, closure in closures.items():
            try:
                data = self.fetcher.read_file(closure, "images_digests.json", top_first_any=False)
            except MirrorError as exc:
                result.warnings.append(f"images_digests.json of {name}:{version}: {exc}")
                continue
            if data:
                found = parse_images_digests(data)
                problem = images_digests_problem(data)
                if problem:
                    result.warnings.append(
                        f"images_digests.json of {name}:{version} {problem}; "
                        f"{len(found)} digest(s) found in its text are used")
                digests += found
        return dedupe(digests)

    def _internal_images(self, repo: str, digests: list[str], result: PackageResult,
                         layouts: _Layouts) -> list[str]:
        """Step 4: the internal images by digest; failures are warnings (Q11)."""
        refs = []
        for digest in digests:
            refs.append(self.options.ref(repo, digest))
            try:
                self._add(layouts.main, repo, digest, digest, result)
            except FetchCancelled:
                raise
            except MirrorError as exc:
                result.warnings.append(f"internal image {repo}@{digest}: {exc}")
        return refs

    def _wanted_extras(self, closures: dict[str, ImageClosure]) -> dict[str, list[str]]:
        """Step 5's images: name → tags, from ``extra_images.json`` (top layer first)."""
        wanted: dict[str, list[str]] = {}
        for closure in closures.values():
            data = self.fetcher.read_file(closure, "extra_images.json", top_first_any=True)
            if data is None:
                continue
            for extra, tag in parse_extra_images_json(data).items():
                wanted.setdefault(extra, [])
                if tag not in wanted[extra]:
                    wanted[extra].append(tag)
        return wanted

    def _extra_images(self, name: str, wanted: dict[str, list[str]], result: PackageResult,
                      layouts: _Layouts) -> list[str]:
        """Step 5: the extra images; failures fail the package."""
        refs = []
        for extra in sorted(wanted):
            repo = self.options.extra_repo(name, extra)
            layout = layouts.extra(extra)
            for tag in wanted[extra]:
                refs.append(self.options.ref(repo, tag))
                try:
                    digest = self.fetcher.resolve(repo, tag)
                    if digest:
                        self._add(layout, repo, digest, tag, result)
                except FetchCancelled:
                    raise
                except MirrorError as exc:
                    raise PackagePullError(f"pull extra image {extra}:{tag} of package {name}: "
                                           f"{exc}") from exc
        return refs

    def _vex_images(self, name: str, refs: list[str], result: PackageResult,
                    layouts: _Layouts) -> None:
        """Step 6: ``.att`` images, looked up in the main package repo (§1.4, Q4)."""
        repo = self.options.package_repo(name)
        self.fetcher.prefetch([(repo, vex_tag_for(ref)) for ref in dedupe(refs)])
        for ref in dedupe(refs):
            tag = vex_tag_for(ref)
            try:
                digest = self.fetcher.resolve(repo, tag)
                if digest:
                    self.fetcher.pull_into(layouts.main, repo, digest, short_tag=tag,
                                           ref_name=vex_ref_for(ref))
                    self._expected.setdefault(str(layouts.main.path), set()).add(tag)
            except FetchCancelled:
                raise
            except MirrorError as exc:
                result.warnings.append(f"VEX image {repo}:{tag}: {exc}")

    def _completeness(self, layouts: _Layouts, result: PackageResult) -> list[str]:
        missing: list[str] = []
        for layout in layouts.all():
            planned = self._expected.get(str(layout.path), set())
            missing += [f"{layout.path.name}:{tag}" for tag in layout.missing(planned)]
        return sorted(missing)

    # -- aliases --------------------------------------------------------------------------------
    def apply_aliases(self, name: str, constraint: PackageConstraint | None, version: Layout,
                      result: PackageResult) -> None:
        """§4: re-tag pinned release images to channels inside ``version/`` (no download)."""
        if constraint is None or not constraint.is_exact_only:
            return
        for tag, channels in constraint.alias_targets():
            entry = next((e for e in version.entries()
                          if (e.ref_name or "").endswith(":" + tag)), None)
            if entry is None:
                continue
            for channel in channels:
                version.retag(entry.digest, channel,
                              alias_ref_name(entry.ref_name or "", channel))


def pull_release_catalog(puller: PackagePuller, name: str, layout_dir: Path,
                         warnings: list[str] | None = None) -> int:
    """``package-versions.tar`` content of one package (§6.9): channels, their versions and
    every tag of ``<name>/version``; missing tags are tolerated. Returns the image count;
    unreadable ``version.json`` files are added to ``warnings``."""
    fetcher, options = puller.fetcher, puller.options
    repo = options.version_repo(name)
    layout = Layout.recreate(layout_dir)    # this run's catalog only, never last run's
    scratch = PackageResult(name=name, work_dir=str(layout_dir))   # list errors: debug (§6.9)
    warnings = [] if warnings is None else warnings
    channels = puller.channels(name)
    tags = list(channels)
    for channel in channels:
        digest = fetcher.resolve(repo, channel)
        if digest is None:
            continue
        closure = fetcher.pull_into(layout, repo, digest, short_tag=channel,
                                    ref_name=options.ref(repo, channel))
        version = channel_version(fetcher, closure, f"{repo}:{channel}", warnings)
        if version:
            tags.append(version)
    try:
        tags += fetcher.list_tags(repo)
    except RegistryError as exc:
        scratch.warnings.append(f"list tags of {repo}: {exc}")
    fetcher.prefetch([(repo, tag) for tag in dedupe(tags) if layout.find(tag) is None])
    for tag in dedupe(tags):
        if layout.find(tag) is not None:
            continue
        digest = fetcher.resolve(repo, tag)
        if digest:
            fetcher.pull_into(layout, repo, digest, short_tag=tag, ref_name=options.ref(repo, tag))
    layout.sort()
    return len(layout.entries())
