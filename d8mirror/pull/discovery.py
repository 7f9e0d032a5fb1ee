"""Package discovery: tags of ``<root>/packages`` (R-2.1–R-2.3, Q5, Q6)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from d8mirror.errors import ConfigError, MirrorError, NotFoundError, RegistryError
from d8mirror.reference import is_valid_component
from d8mirror.registry import RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

from .options import PullOptions


class DiscoveryError(MirrorError):
    """The packages catalog could not be read (denied, server error, network)."""


class Discovery(BaseModel):
    """The packages found in the catalog (filtered), and what discovery tolerated."""

    names: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def validate_proxy_mode(options: PullOptions) -> None:
    """Q5: ``--proxy-registry`` needs a package whitelist, checked before any request."""
    if (
        options.proxy_registry
        and options.per_package_phase
        and not options.package_filter.is_whitelist
    ):
        raise ConfigError(
            "--proxy-registry requires a whitelist of packages (--include-package): a proxy "
            "registry cannot list the packages catalog"
        )


def discover_packages(
    client: RegistryClient,
    options: PullOptions,
    *,
    lenient: bool = False,
    retry: RetryPolicy | None = None,
) -> Discovery:
    """Names of the packages to mirror, filtered and sorted.

    ``lenient`` is the ``package-versions.tar`` mode (R-6.9): every failure left after ``retry``
    is a warning (R-2.2), and the names are not filtered — that archive covers every package of
    the catalog (in proxy mode: every whitelisted name), whatever ``--include-package``,
    ``--exclude-package``, ``--no-packages`` or ``--only-extra-images`` select.
    """
    found = Discovery()
    if options.proxy_registry:
        if not options.package_filter.is_whitelist:
            found.warnings.append(
                "Skipping package release images (package-versions): "
                "--proxy-registry without --include-package"
            )
            return found
        candidates = options.package_filter.whitelist_names()
    else:
        try:
            candidates = (retry or default_policy()).call(
                lambda: client.list_tags(options.catalog),
                what=f"list packages of {options.catalog}",
            )
        except NotFoundError as exc:
            found.warnings.append(
                f"Skipping pull of packages: {options.source.registry}/"
                f"{options.catalog} does not exist ({exc})"
            )
            return found
        except RegistryError as exc:
            if lenient:
                found.warnings.append(f"Skipping package release images (package-versions): {exc}")
                return found
            raise DiscoveryError(
                f"validate packages access: failed to list packages from registry "
                f"{options.source.registry}/{options.catalog}: {exc}"
            ) from exc
        if not candidates:
            found.warnings.append(
                "Packages were not found, check your source repository "
                "address and packages path suffix"
            )
            return found
    for name in sorted(candidates):
        if not is_valid_component(name):
            found.warnings.append(f"Skipping catalog tag {name!r}: not a valid repository name")
            continue
        if lenient or options.package_filter.matches(name):
            found.names.append(name)
    if not found.names and not lenient:
        found.warnings.append("No packages matched the filter criteria")
    return found
