"""Bench step (h): the nightly delta after the ~5 % change (issue 17).

The target holds state A (the cold bundle's push). Its receipt is taken by a scan, then a pull of
state B from that receipt with a fresh cache builds a delta bundle, which is pushed into the
target. Reported: delta bundle bytes vs the full bundle of B vs the truly new unique bytes (the
blobs B has that A did not), and the delta pull's time vs the full re-pull's.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

#: Small members are read to tell manifests and indexes from configs and layers.
_JSON_PROBE = 4 * 1024 * 1024


@dataclass(frozen=True)
class BundleBytes:
    total: int  # bytes of the bundle's archives
    payload: int  # config and layer blob bytes in them (not manifests, indexes, tar framing)

    @property
    def meta(self) -> int:
        """index.json, oci-layout, manifests, indexes and tar headers/padding."""
        return self.total - self.payload


def _is_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bool:
    if member.size > _JSON_PROBE:
        return False
    stream = tar.extractfile(member)
    if stream is None:
        return False
    try:
        doc = json.loads(stream.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and ("layers" in doc or "manifests" in doc)


def bundle_bytes(bundle: Path) -> BundleBytes:
    total = payload = 0
    for archive in sorted(bundle.glob("*.tar")):
        total += archive.stat().st_size
        with tarfile.open(archive) as tar:
            for member in tar:
                blob = member.isfile() and "/blobs/sha256/" in member.name
                if blob and not _is_manifest(tar, member):
                    payload += member.size
    return BundleBytes(total, payload)


def delta_lines(
    delta: BundleBytes, full_bundle: int, new_unique: int, delta_wall: float, full_wall: float
) -> list[str]:
    """The summary lines and the PASS/FAIL of the delta target."""
    bound = 1.05 * new_unique + delta.meta
    ok = delta.total <= bound
    return [
        f"delta bundle {delta.total / 1e6:.1f} MB (blobs {delta.payload / 1e6:.1f} MB, "
        f"indexes/manifests/tar framing {delta.meta / 1e6:.1f} MB) vs full bundle "
        f"{full_bundle / 1e6:.1f} MB ({delta.total / full_bundle:.1%}) vs new unique blob bytes "
        f"{new_unique / 1e6:.1f} MB",
        f"delta pull {delta_wall:.2f} s (fresh cache) vs full re-pull {full_wall:.2f} s "
        f"(kept cache)",
        f"{'PASS' if ok else 'FAIL'}  delta <= 1.05 x new unique + index/manifest bytes"
        f"{'':<9} measured {delta.total / 1e6:.3g} MB (target <= {bound / 1e6:.3g} MB)",
    ]
