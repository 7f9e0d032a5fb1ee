"""The second stage of a package pull: fetch what its plan names (R-3.5, R-4, R-5, R-6.6,
R-1.4, R-1.5).

:func:`fetch_package` takes a :class:`~d8mirror.pull.plan.PackagePlan` and the package's
working-dir layouts (:class:`PackageLayouts`: the main layout at its root, ``version/``,
``extra/<name>/``) and records, in order: channel images → main images → release images →
internal digest images → extra images → VEX → completeness check → sort → channel aliases.
It resolves nothing the plan already answered, so the fetch records exactly the digests its
plan (and so its cache key) names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from d8mirror.errors import MirrorError
from d8mirror.imagefs import images_digests_problem, parse_extra_images_json, parse_images_digests
from d8mirror.layout import Layout, alias_ref_name
from d8mirror.names import EXTRA, VERSION, VEX_SUFFIX, vex_ref_for, vex_tag_for
from d8mirror.versions import DEFAULT_CHANNELS, LTS_CHANNEL, PackageConstraint

from .fetcher import FetchCancelled, ImageClosure, ImageFetcher, dedupe
from .options import PullOptions
from .plan import PackagePlan, PackagePullError, reads_channels

__all__ = ["FetchResult", "PackageLayouts", "PackagePullError", "fetch_package"]


class FetchResult(BaseModel):
    """What one package fetch recorded (small and JSON-able: a Prefect task result)."""

    name: str
    work_dir: str
    versions: list[str] = Field(default_factory=list)
    images: int = Field(0, description="Images recorded in the package's layouts.")
    vex: int = Field(0, description="VEX attestations among them.")
    warnings: list[str] = Field(
        default_factory=list, description="The plan's warnings, then the fetch's own."
    )
    blobs_fetched: int = Field(0, description="Blobs downloaded (not found in the store).")
    bytes_fetched: int = 0
    blobs_reused: int = Field(0, description="Blobs the store already held (not downloaded).")


@dataclass
class PackageLayouts:
    """The layouts of one package's working dir (see the module docstring)."""

    root: Path
    main: Layout
    version: Layout
    extras: dict[str, Layout] = field(default_factory=dict)

    @classmethod
    def fresh(cls, work_dir: Path) -> PackageLayouts:
        """This run's layouts only: a previous run's layouts (and index entries) are dropped."""
        return cls(
            root=work_dir, main=Layout.recreate(work_dir), version=Layout.create(work_dir / VERSION)
        )

    def extra(self, name: str) -> Layout:
        if name not in self.extras:
            self.extras[name] = Layout.create(self.root / EXTRA / name)
        return self.extras[name]

    def all(self) -> list[Layout]:
        return [self.main, self.version, *[self.extras[k] for k in sorted(self.extras)]]


@contextmanager
def _failure_as(handle: Callable[[MirrorError], None]) -> Iterator[None]:
    """Hand a failure of the block to ``handle`` (a warning, or the package's failure); a
    stop request still stops the pull."""
    try:
        yield
    except FetchCancelled:
        raise
    except MirrorError as exc:
        handle(exc)


def remember_plan(fetcher: ImageFetcher, options: PullOptions, plan: PackagePlan) -> None:
    """Tell ``fetcher`` every answer of ``plan``, so the fetch asks the source none again."""
    repo, version_repo = options.package_repo(plan.name), options.version_repo(plan.name)
    for version, digest in plan.digests.items():
        fetcher.remember(repo, version, digest)
    for channel in [*DEFAULT_CHANNELS, LTS_CHANNEL]:
        fetcher.remember(version_repo, channel, plan.channels.get(channel))
    for tag_repo, tag, digest in plan.tags or []:
        if tag_repo is not None and tag is not None:
            fetcher.remember(tag_repo, tag, digest)


def fetch_package(
    fetcher: ImageFetcher, options: PullOptions, plan: PackagePlan, layouts: PackageLayouts
) -> FetchResult:
    """Fetch and record every image of ``plan`` into ``layouts`` (see the module docstring).
    Raises PackagePullError when the package cannot be pulled completely."""
    remember_plan(fetcher, options, plan)
    return _PackageFetch(fetcher, options, plan, layouts).run()


class _PackageFetch:
    """One run of :func:`fetch_package`: the steps, and what they recorded."""

    def __init__(
        self,
        fetcher: ImageFetcher,
        options: PullOptions,
        plan: PackagePlan,
        layouts: PackageLayouts,
    ) -> None:
        self.fetcher, self.options, self.plan, self.layouts = fetcher, options, plan, layouts
        self.name = plan.name
        self.constraint: PackageConstraint | None = options.package_filter.constraint_for(plan.name)
        self.warnings = list(plan.warnings)
        self.expected: dict[str, set[str]] = {}

    def run(self) -> FetchResult:
        stats = self.fetcher.stats
        before = (stats.blobs_fetched, stats.bytes_fetched, stats.blobs_reused)
        if reads_channels(self.options, self.constraint):
            self._channel_images()
        self._content()
        missing = self._completeness()
        if missing:
            raise PackagePullError(
                f"pulled layout of package {self.name} is incomplete: {len(missing)} planned "
                f"images missing: {', '.join(missing)}"
            )
        for layout in self.layouts.all():
            layout.sort()
        if not self.options.only_extra_images:
            apply_aliases(self.constraint, self.layouts.version)
        main = self.layouts.main
        return FetchResult(
            name=self.name,
            work_dir=str(self.layouts.root),
            versions=list(self.plan.versions),
            images=sum(len(layout.entries()) for layout in self.layouts.all()),
            vex=sum(1 for e in main.entries() if (e.short_tag or "").endswith(VEX_SUFFIX)),
            warnings=self.warnings,
            blobs_fetched=stats.blobs_fetched - before[0],
            bytes_fetched=stats.bytes_fetched - before[1],
            blobs_reused=stats.blobs_reused - before[2],
        )

    def _warn(self, what: str) -> AbstractContextManager[None]:
        return _failure_as(lambda exc: self.warnings.append(f"{what}: {exc}"))

    # -- the steps ------------------------------------------------------------------------------
    def _channel_images(self) -> None:
        """Step 1: the channel images the plan read, into ``version/``."""
        repo = self.options.version_repo(self.name)
        for channel, digest in self.plan.channels.items():
            if digest is not None:
                self.fetcher.pull_into(
                    self.layouts.version,
                    repo,
                    digest,
                    short_tag=channel,
                    ref_name=self.options.ref(repo, channel),
                )

    def _content(self) -> None:
        """Images in waves: each wave is prefetched several at once into the blob store, then
        recorded in order (layouts, warnings and errors stay deterministic)."""
        repo, versions = self.options.package_repo(self.name), self.plan.versions
        only_extra = self.options.only_extra_images
        wave = [(repo, v) for v in versions]
        if not only_extra:
            wave += [(self.options.version_repo(self.name), v) for v in versions]
        self.fetcher.prefetch(wave)
        main_closures, vex_inputs = self._main_images()
        internal: list[str] = []
        if not only_extra:
            self._release_images()
            internal = self._internal_digests(main_closures)
        extras = self._wanted_extras(main_closures)
        self.fetcher.prefetch(
            [(repo, d) for d in internal]
            + [
                (self.options.extra_repo(self.name, extra), tag)
                for extra, tags in extras.items()
                for tag in tags
            ]
        )
        vex_inputs += self._internal_images(repo, internal)
        vex_inputs += self._extra_images(extras)
        if not self.options.skip_vex_images:
            self._vex_images(vex_inputs)

    def _main_images(self) -> tuple[dict[str, ImageClosure], list[str]]:
        """Step 2: the versions' main images (fetched; recorded unless extra images only).
        Returns their closures and the refs whose VEX is wanted (R-3.6: the extras' only)."""
        repo = self.options.package_repo(self.name)
        closures: dict[str, ImageClosure] = {}
        vex_inputs: list[str] = []
        for version in self.plan.versions:
            digest = self.fetcher.resolve(repo, version)
            if not self.options.only_extra_images:
                vex_inputs.append(self.options.ref(repo, version))
            if digest is None:
                if self.constraint and any(e.tag == version for e in self.constraint.exacts):
                    self.warnings.append(
                        f"pinned version {version} of package {self.name} "
                        "was not found in the source registry"
                    )
                continue
            closures[version] = self.fetcher.image(repo, digest)
            if not self.options.only_extra_images:
                self._add(self.layouts.main, repo, digest, version)
        return closures, vex_inputs

    def _add(
        self, layout: Layout, repo: str, digest: str, tag: str, ref_name: str | None = None
    ) -> None:
        short_tag = tag.split(":", 1)[1] if tag.startswith("sha256:") else tag
        self.fetcher.pull_into(
            layout,
            repo,
            digest,
            short_tag=short_tag,
            ref_name=ref_name or self.options.ref(repo, tag),
        )
        self.expected.setdefault(str(layout.path), set()).add(short_tag)

    def _release_images(self) -> None:
        """Step 3: ``version:vX.Y.Z`` images; failures are warnings (Q11)."""
        repo = self.options.version_repo(self.name)
        for version in self.plan.versions:
            with self._warn(f"release image {repo}:{version}"):
                digest = self.fetcher.resolve(repo, version)
                if digest:
                    self._add(self.layouts.version, repo, digest, version)

    def _internal_digests(self, closures: dict[str, ImageClosure]) -> list[str]:
        """Step 4's digests, from ``images_digests.json``; failures are warnings (Q11)."""
        digests: list[str] = []
        for version, closure in closures.items():
            data = None
            with self._warn(f"images_digests.json of {self.name}:{version}"):
                data = self.fetcher.read_file(closure, "images_digests.json", top_first_any=False)
            if data:
                found = parse_images_digests(data)
                problem = images_digests_problem(data)
                if problem:
                    self.warnings.append(
                        f"images_digests.json of {self.name}:{version} {problem}; "
                        f"{len(found)} digest(s) found in its text are used"
                    )
                digests += found
        return dedupe(digests)

    def _internal_images(self, repo: str, digests: list[str]) -> list[str]:
        """Step 4: the internal images by digest; failures are warnings (Q11)."""
        refs = []
        for digest in digests:
            refs.append(self.options.ref(repo, digest))
            with self._warn(f"internal image {repo}@{digest}"):
                self._add(self.layouts.main, repo, digest, digest)
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

    def _extra_images(self, wanted: dict[str, list[str]]) -> list[str]:
        """Step 5: the extra images; failures fail the package."""
        refs = []
        for extra in sorted(wanted):
            repo = self.options.extra_repo(self.name, extra)
            layout = self.layouts.extra(extra)
            for tag in wanted[extra]:
                refs.append(self.options.ref(repo, tag))

                def fail(exc: MirrorError, extra: str = extra, tag: str = tag) -> None:
                    raise PackagePullError(
                        f"pull extra image {extra}:{tag} of package {self.name}: {exc}"
                    ) from exc

                with _failure_as(fail):
                    digest = self.fetcher.resolve(repo, tag)
                    if digest:
                        self._add(layout, repo, digest, tag)
        return refs

    def _vex_images(self, refs: list[str]) -> None:
        """Step 6: ``.att`` images, looked up in the main package repo (R-1.4, Q4)."""
        repo = self.options.package_repo(self.name)
        self.fetcher.prefetch([(repo, vex_tag_for(ref)) for ref in dedupe(refs)])
        for ref in dedupe(refs):
            tag = vex_tag_for(ref)
            with self._warn(f"VEX image {repo}:{tag}"):
                digest = self.fetcher.resolve(repo, tag)
                if digest:
                    self._add(self.layouts.main, repo, digest, tag, ref_name=vex_ref_for(ref))

    def _completeness(self) -> list[str]:
        missing: list[str] = []
        for layout in self.layouts.all():
            planned = self.expected.get(str(layout.path), set())
            missing += [f"{layout.path.name}:{tag}" for tag in layout.missing(planned)]
        return sorted(missing)


def apply_aliases(constraint: PackageConstraint | None, version: Layout) -> None:
    """R-4: re-tag pinned release images to channels inside ``version/`` (no download)."""
    if constraint is None or not constraint.is_exact_only:
        return
    for tag, channels in constraint.alias_targets():
        entry = next((e for e in version.entries() if (e.ref_name or "").endswith(":" + tag)), None)
        if entry is None:
            continue
        for channel in channels:
            version.retag(entry.digest, channel, alias_ref_name(entry.ref_name or "", channel))
