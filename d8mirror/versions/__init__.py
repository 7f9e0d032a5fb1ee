"""Package versions: filters, Masterminds semver constraints, selection, the proxy probe."""

from d8mirror.versions.channels import (
    ALL_CHANNELS,
    DEFAULT_CHANNELS,
    LTS_CHANNEL,
    is_valid_channel,
)
from d8mirror.versions.filters import (
    EXCLUDE_FLAG,
    INCLUDE_FLAG,
    ExactTag,
    PackageConstraint,
    PackageFilter,
    ParsedExpression,
    parse_constraint,
    parse_expression,
)
from d8mirror.versions.probe import probe_versions, proxy_semver_constraints
from d8mirror.versions.selection import (
    needs_tag_listing,
    select_semver,
    sort_versions_desc,
    versions_to_mirror,
)
from d8mirror.versions.semver_constraints import SemverConstraint, parse_version_lenient

__all__ = [
    "ALL_CHANNELS",
    "DEFAULT_CHANNELS",
    "EXCLUDE_FLAG",
    "INCLUDE_FLAG",
    "LTS_CHANNEL",
    "ExactTag",
    "PackageConstraint",
    "PackageFilter",
    "ParsedExpression",
    "SemverConstraint",
    "is_valid_channel",
    "needs_tag_listing",
    "parse_constraint",
    "parse_expression",
    "parse_version_lenient",
    "probe_versions",
    "proxy_semver_constraints",
    "select_semver",
    "sort_versions_desc",
    "versions_to_mirror",
]
