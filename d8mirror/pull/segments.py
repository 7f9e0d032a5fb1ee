"""Registry and bundle path segments, defined once for pull and push (spec Part B §1.1)."""

from __future__ import annotations

PACKAGES = "packages"        # catalog repository; bundle prefix of every package
VERSION = "version"          # release metadata: <root>/packages/<name>/version:<channel|vX.Y.Z>
EXTRA = "extra"              # extra images: <root>/packages/<name>/extra/<extra-name>:<tag>
VEX_SUFFIX = ".att"
DEFAULT_PACKAGES_PATH = "/packages"


def normalize_packages_path(suffix: str | None) -> str:
    """``--packages-path-suffix``: ``""``/None → ``packages``; ``/x/y/`` → ``x/y``; ``/`` → root."""
    if not suffix:
        return PACKAGES
    return suffix.strip("/")


def package_archive_name(name: str) -> str:
    return f"package-{name}.tar"


VERSIONS_ARCHIVE = "package-versions.tar"


def vex_ref_for(reference: str) -> str:
    """Reference of the VEX attestation of ``reference`` (spec §1.4, kept for compatibility, Q4).

    ``R@sha256:<hex>`` → ``R:sha256-<hex>.att``; ``R:<tag>`` → ``R:<tag>.att``.
    """
    ref = reference.replace("@sha256:", "@sha256-", 1).replace("@sha256", ":sha256", 1)
    return ref + VEX_SUFFIX


def vex_tag_for(reference: str) -> str:
    """The tag part of :func:`vex_ref_for` (``sha256-<hex>.att`` or ``<tag>.att``)."""
    return vex_ref_for(reference).rsplit(":", 1)[-1]
