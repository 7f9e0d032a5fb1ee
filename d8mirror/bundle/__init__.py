"""Bundle archives: deterministic tars, atomic writes, exact chunks, safe unpack, checksums.

R-7.1–R-7.4, R-7.6, R-8.1, R-8.2; Q15, Q16.
"""

from .checksums import (
    SIDECAR_WORKERS,
    CheckedFiles,
    check_archive_sidecars,
    gost_hex_file,
    verify_sidecars,
)
from .chunks import chunk_path, open_archive
from .discovery import (
    BundleFileStat,
    bundle_stats,
    canonical_package_path,
    discover_archives,
    is_package_file,
    package_name_from_path,
)
from .pack import ArchiveResult, PackCancelled, pack_archive
from .sizes import parse_size
from .tarwriter import TarMember, TarSource, write_tar
from .unpack import SPAN_THRESHOLD, BlobSpan, BlobSpans, is_plain_tar, safe_unpack

__all__ = [
    "SIDECAR_WORKERS",
    "SPAN_THRESHOLD",
    "ArchiveResult",
    "BlobSpan",
    "BlobSpans",
    "BundleFileStat",
    "CheckedFiles",
    "PackCancelled",
    "TarMember",
    "TarSource",
    "bundle_stats",
    "canonical_package_path",
    "check_archive_sidecars",
    "chunk_path",
    "discover_archives",
    "gost_hex_file",
    "is_package_file",
    "is_plain_tar",
    "open_archive",
    "pack_archive",
    "package_name_from_path",
    "parse_size",
    "safe_unpack",
    "verify_sidecars",
    "write_tar",
]
