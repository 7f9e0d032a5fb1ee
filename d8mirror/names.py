"""Names of the bundle and registry layout, defined once for pull, push, verify and transfer.

Registry paths under an edition root (R-1.1)::

    <root>/packages:<name>                        catalog (discovery) tag of a package
    <root>/packages/<name>:<tag>                  main images
    <root>/packages/<name>/version:<channel>      release metadata
    <root>/packages/<name>/extra/<extra>:<tag>    extra images
    <root>/modules/<name>, <root>/deckhouse-cli/plugins/<name>   (pushed from a d8 bundle)

The ``packages`` and ``modules`` segments can be remapped by ``--packages-path-suffix`` and
``--modules-path-suffix``; :func:`normalize_path_suffix` is the one rule for both pull and push.

Bundle files: ``package-<name>.tar``, ``package-versions.tar``, chunks
``<archive>.NNNN.chunk``, sidecars ``<file>.sha256`` and ``<file>.gostsum``; staging names end
in ``.tmp`` and resumable downloads in ``.partial``.
"""

from __future__ import annotations

import re
from pathlib import Path

from d8mirror.errors import ConfigError
from d8mirror.reference import is_valid_repository

# -- registry path segments ----------------------------------------------------------------------
PACKAGES = "packages"  # catalog repository; bundle prefix of every package
MODULES = "modules"  # modules of a d8 bundle (push only)
PLUGINS = "deckhouse-cli/plugins"
VERSION = "version"  # release metadata: <root>/packages/<name>/version:<channel|vX.Y.Z>
EXTRA = "extra"  # extra images: <root>/packages/<name>/extra/<extra-name>:<tag>
DEFAULT_PACKAGES_PATH = "/" + PACKAGES  # default --packages-path-suffix
DEFAULT_MODULES_PATH = "/" + MODULES  # default --modules-path-suffix
VEX_SUFFIX = ".att"


def normalize_path_suffix(
    suffix: str | None, default_segment: str = PACKAGES, *, flag: str = "--packages-path-suffix"
) -> str:
    """A path-suffix flag as a repository segment: empty/None → ``default_segment``;
    ``/x/y/`` → ``x/y``; ``/`` → ``""`` (the repository itself).

    Raises :class:`ConfigError` naming ``flag`` when a component is not a valid repository
    path component."""
    if suffix is None or suffix == "":
        return default_segment
    normalised = suffix.strip().strip("/")
    if normalised and not is_valid_repository(normalised):
        raise ConfigError(
            f"invalid {flag} {suffix!r}: path components can only contain "
            "lowercase letters, digits and separators (., _, __, -); pass a path "
            f"such as /{default_segment} or / for the repository itself"
        )
    return normalised


def vex_ref_for(reference: str) -> str:
    """Reference of the VEX attestation of ``reference`` (R-1.4, kept for compatibility, Q4).

    ``R@sha256:<hex>`` → ``R:sha256-<hex>.att``; ``R:<tag>`` → ``R:<tag>.att``.
    """
    ref = reference.replace("@sha256:", "@sha256-", 1).replace("@sha256", ":sha256", 1)
    return ref + VEX_SUFFIX


def vex_tag_for(reference: str) -> str:
    """The tag part of :func:`vex_ref_for` (``sha256-<hex>.att`` or ``<tag>.att``)."""
    return vex_ref_for(reference).rsplit(":", 1)[-1]


# -- archives ------------------------------------------------------------------------------------
ARCHIVE_SUFFIX = ".tar"
CHUNK_SUFFIX = ".chunk"
ARCHIVE_FILE_SUFFIXES = (ARCHIVE_SUFFIX, CHUNK_SUFFIX)  # files a bundle's checksums cover
VERSIONS_ARCHIVE = "package-versions.tar"
CHUNK_NAME = re.compile(r"^(?P<base>.+)\.(?P<index>\d{4,})\.chunk$")
"""``<base>.NNNN.chunk`` (four or more digits)."""


def package_archive_name(name: str) -> str:
    """``package-<name>.tar``."""
    return f"package-{name}{ARCHIVE_SUFFIX}"


def chunk_name(archive_name: str, index: int) -> str:
    """``<archive>.NNNN.chunk`` (four digits, more past 9999)."""
    return f"{archive_name}.{index:04d}{CHUNK_SUFFIX}"


# -- sidecars and working names ------------------------------------------------------------------
SHA256_SUFFIX = ".sha256"  # "<hex>  <file name>\n" (sha256sum format)
GOST_SUFFIX = ".gostsum"  # 64 lowercase hex chars, no newline (as d8 writes it)
SIDECAR_SUFFIXES = (SHA256_SUFFIX, GOST_SUFFIX)
TMP_SUFFIX = ".tmp"  # staged under this name, renamed into place when complete
PARTIAL_SUFFIX = ".partial"  # a resumable download


def with_suffix(path: Path, suffix: str) -> Path:
    """``<path><suffix>`` beside ``path`` (``x.tar`` → ``x.tar.sha256``)."""
    return path.with_name(path.name + suffix)


def sha256_sidecar(path: Path) -> Path:
    return with_suffix(path, SHA256_SUFFIX)


def gost_sidecar(path: Path) -> Path:
    return with_suffix(path, GOST_SUFFIX)
