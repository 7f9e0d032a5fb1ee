"""Verify a bundle directory end to end, offline: ``verify_bundle(dir) -> VerifyReport``.

Checks, each reported as a plain sentence naming the file:

* every ``.tar``/``.chunk`` file against its ``.sha256`` sidecar (and ``.gostsum`` if present),
  by digest only, so an archive renamed with its sidecar verifies; a sidecar whose file is
  missing. A bundle with no ``.sha256`` at all (written by d8) gets a note, not a problem;
* exactly the checks push runs before it uploads anything (:mod:`d8mirror.push.validate`, one
  code path: archives read to their end-of-archive marker, chunks contiguous, plain tars only,
  safe regular entries, valid ``index.json`` files and short tags, valid layout names, every
  referenced manifest present and hashing to its digest, every referenced blob present or, in
  a delta bundle, omitted by its ``delta.json``, itself checked against its sidecar), plus
  every blob hashed against its name; a descriptor without a short tag (push skips it) is a
  problem here;
* when a transfer manifest (``d8mirror-transfer.json``) is present, every file it lists exists
  with the listed size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.bundle import discover_archives, verify_sidecars
from d8mirror.bundle.checksums import has_sha256_sidecars
from d8mirror.delta import read_delta
from d8mirror.errors import BundleError, ConfigError, ReceiptError, SealedFileError
from d8mirror.names import SHA256_SUFFIX
from d8mirror.push.validate import check_archives

TRANSFER_MANIFEST = "d8mirror-transfer.json"
NO_SIDECARS = (
    "no .sha256 sidecars (a bundle written by d8): the archives' own checksums were "
    "not checked; every blob inside was hashed against its digest"
)


@dataclass
class VerifyReport:
    """What was checked and every problem found (empty = the bundle is intact)."""

    bundle_dir: Path
    files: int = 0  # archive files and chunks checked against sidecars
    archives: int = 0  # canonical archives streamed
    blobs: int = 0  # layout blobs hashed
    descriptors: int = 0  # index.json descriptors checked for a short tag
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # information, not failures

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        counts = (
            f"{self.archives} archive(s) in {self.files} file(s), {self.blobs} blob(s), "
            f"{self.descriptors} index descriptor(s)"
        )
        notes = [f"Note: {n}" for n in self.notes]
        if self.ok:
            return "\n".join(
                [f"OK: bundle {self.bundle_dir} is intact: {counts} verified.", *notes]
            )
        lines = [
            f"FAILED: bundle {self.bundle_dir} has {len(self.problems)} problem(s) "
            f"({counts} checked):"
        ]
        lines += [f"  - {p}" for p in self.problems]
        lines.append("Copy the named files again from the source side, or pull the bundle again.")
        return "\n".join([*lines, *notes])

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_dir": str(self.bundle_dir),
            "ok": self.ok,
            "files": self.files,
            "archives": self.archives,
            "blobs": self.blobs,
            "descriptors": self.descriptors,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def verify_bundle(bundle_dir: Path) -> VerifyReport:
    """Check ``bundle_dir`` as described in the module docstring."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise ConfigError(f"bundle directory {bundle_dir} does not exist or is not a directory")
    report = VerifyReport(bundle_dir)
    report.problems += verify_sidecars(bundle_dir)
    if not has_sha256_sidecars(bundle_dir):
        report.notes.append(NO_SIDECARS)
    report.problems += _orphan_sidecars(bundle_dir)
    report.problems += _transfer_manifest_problems(bundle_dir)
    try:
        archives = discover_archives(bundle_dir)
    except BundleError:
        archives = []
    omitted = _omitted_blobs(bundle_dir, report)
    check = check_archives(archives, deep=True, omitted=omitted)
    report.archives, report.files = check.archives, check.files
    report.blobs, report.descriptors = check.blobs_hashed, check.descriptors
    report.problems += check.problems + check.untagged
    if report.archives == 0:
        report.problems.append(f"{bundle_dir}: no archives (*.tar or *.chunk) found")
    return report


def _omitted_blobs(bundle_dir: Path, report: VerifyReport) -> dict[str, int] | None:
    """A delta bundle's omitted blobs (digest → size; its ``delta.json`` checked against its
    sidecar), noted in ``report``; None for a full bundle or an unreadable ``delta.json``
    (a problem: then every missing blob is one too)."""
    try:
        delta = read_delta(bundle_dir)
    except (ReceiptError, SealedFileError) as exc:
        report.problems.append(str(exc))
        return None
    if delta is None:
        return None
    report.notes.append(
        f"delta bundle {delta.id} (base receipt sha256:{delta.base_receipt_sha256}): "
        f"{len(delta.omitted)} blobs ({delta.bytes_omitted} bytes) are left out, as the "
        "target holds them; push checks that before it writes anything"
    )
    return {blob.digest: blob.size for blob in delta.omitted}


def _orphan_sidecars(bundle_dir: Path) -> list[str]:
    problems = []
    for sidecar in sorted(bundle_dir.glob("*" + SHA256_SUFFIX)):
        target = sidecar.with_name(sidecar.name.removesuffix(SHA256_SUFFIX))
        if not target.exists():
            problems.append(f"{target}: missing (its checksum file {sidecar.name} is present)")
    return problems


def _transfer_manifest_problems(bundle_dir: Path) -> list[str]:
    path = bundle_dir / TRANSFER_MANIFEST
    if not path.is_file():
        return []
    try:
        files = json.loads(path.read_bytes())["files"]
        listed = {str(f["name"]): int(f["size"]) for f in files}
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path}: unreadable transfer manifest ({exc})"]
    problems = []
    for name, size in sorted(listed.items()):
        target = bundle_dir / name
        if not target.is_file():
            problems.append(f"{target}: listed in {TRANSFER_MANIFEST} but missing")
        elif target.stat().st_size != size:
            problems.append(
                f"{target}: {target.stat().st_size} bytes, {TRANSFER_MANIFEST} says {size}"
            )
    return problems
