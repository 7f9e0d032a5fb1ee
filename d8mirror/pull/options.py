"""What a pull is asked to do: plain, frozen data (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

from d8mirror.names import EXTRA, PACKAGES, VERSION
from d8mirror.reference import Repository
from d8mirror.versions import PackageFilter


@dataclass(frozen=True)
class PullOptions:
    source: Repository  # the edition root: registry.example.com/deckhouse/ee
    package_filter: PackageFilter = field(default_factory=PackageFilter.from_flags)
    packages_path: str = PACKAGES  # normalised --packages-path-suffix
    no_packages: bool = False
    only_extra_images: bool = False
    skip_vex_images: bool = False
    proxy_registry: bool = False
    dry_run: bool = False

    @property
    def catalog(self) -> str:
        """Repository path whose tags are package names."""
        return "/".join(p for p in (self.source.path, self.packages_path) if p)

    def package_repo(self, name: str) -> str:
        return f"{self.catalog}/{name}"

    def version_repo(self, name: str) -> str:
        return f"{self.package_repo(name)}/{VERSION}"

    def extra_repo(self, name: str, extra: str) -> str:
        return f"{self.package_repo(name)}/{EXTRA}/{extra}"

    def ref(self, repository: str, tag_or_digest: str) -> str:
        """Full reference string as recorded in ``org.opencontainers.image.ref.name``."""
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.source.registry}/{repository}{sep}{tag_or_digest}"

    @property
    def per_package_phase(self) -> bool:
        return not self.no_packages or self.only_extra_images
