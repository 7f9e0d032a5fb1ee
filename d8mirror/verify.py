"""Verify a bundle directory end to end, offline: ``verify_bundle(dir) -> VerifyReport``.

Checks, each reported as a plain sentence naming the file:

* every ``.tar``/``.chunk`` file against its ``.sha256`` sidecar (and ``.gostsum`` if present);
  a sidecar whose file is missing;
* inside every archive (chunks read as one stream, never unpacked to disk): each member under
  ``…/blobs/sha256/<hex>`` hashes to its name; every descriptor of every ``index.json`` carries
  ``io.deckhouse.image.short_tag``; every blob an index or manifest refers to is present in the
  same layout of the same archive;
* when a transfer manifest (``d8mirror-transfer.json``) is present, every file it lists exists
  with the listed size.

Archives are streamed (``tarfile`` in ``r|`` mode); only manifests and indexes (small, capped)
are held in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from d8mirror.bundle import bundle_stats, open_archive, verify_sidecars
from d8mirror.errors import BundleError, ConfigError, LayoutError
from d8mirror.layout import parse_index
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG, MAX_MANIFEST_BYTES

_BLOB = re.compile(r"^(?P<layout>(?:.+/)?)blobs/sha256/(?P<hex>[0-9a-f]{64})$")
_INDEX = re.compile(r"^(?P<layout>(?:.+/)?)index\.json$")
_PIECE = 1 << 20
_MAX_INDEX_BYTES = 64 << 20
TRANSFER_MANIFEST = "d8mirror-transfer.json"


@dataclass
class VerifyReport:
    """What was checked and every problem found (empty = the bundle is intact)."""

    bundle_dir: Path
    files: int = 0        # archive files and chunks checked against sidecars
    archives: int = 0     # canonical archives streamed
    blobs: int = 0        # layout blobs hashed
    descriptors: int = 0  # index.json descriptors checked for a short tag
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        counts = (f"{self.archives} archive(s) in {self.files} file(s), {self.blobs} blob(s), "
                  f"{self.descriptors} index descriptor(s)")
        if self.ok:
            return f"OK: bundle {self.bundle_dir} is intact: {counts} verified."
        lines = [f"FAILED: bundle {self.bundle_dir} has {len(self.problems)} problem(s) "
                 f"({counts} checked):"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append("Copy the named files again from the source side, or pull the bundle again.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"bundle_dir": str(self.bundle_dir), "ok": self.ok, "files": self.files,
                "archives": self.archives, "blobs": self.blobs,
                "descriptors": self.descriptors, "problems": list(self.problems)}


def verify_bundle(bundle_dir: Path) -> VerifyReport:
    """Check ``bundle_dir`` as described in the module docstring."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise ConfigError(f"bundle directory {bundle_dir} does not exist or is not a directory")
    report = VerifyReport(bundle_dir)
    report.files = sum(1 for p in bundle_dir.iterdir()
                       if p.is_file() and p.name.endswith((".tar", ".chunk")))
    report.problems += verify_sidecars(bundle_dir)
    report.problems += _orphan_sidecars(bundle_dir)
    report.problems += _transfer_manifest_problems(bundle_dir)
    for stat in bundle_stats(bundle_dir):
        report.archives += 1
        _ArchiveCheck(bundle_dir / stat.name, report).run()
    if report.archives == 0:
        report.problems.append(f"{bundle_dir}: no archives (*.tar or *.chunk) found")
    return report


def _orphan_sidecars(bundle_dir: Path) -> list[str]:
    problems = []
    for sidecar in sorted(bundle_dir.glob("*.sha256")):
        target = sidecar.with_name(sidecar.name.removesuffix(".sha256"))
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
            problems.append(f"{target}: {target.stat().st_size} bytes, {TRANSFER_MANIFEST} "
                            f"says {size}")
    return problems


class _ArchiveCheck:
    """One streamed pass over one archive."""

    def __init__(self, archive: Path, report: VerifyReport) -> None:
        self.archive = archive
        self.report = report
        self.present: set[tuple[str, str]] = set()       # (layout prefix, digest)
        self.referenced: dict[tuple[str, str], str] = {}  # (layout prefix, digest) -> by whom

    def problem(self, text: str) -> None:
        self.report.problems.append(f"{self.archive.name}: {text}")

    def run(self) -> None:
        try:
            with open_archive(self.archive) as stream, \
                    tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.isfile():
                        self._member(tar, member)
        except (tarfile.TarError, EOFError, BundleError, OSError) as exc:
            self.problem(f"cannot be read to the end ({type(exc).__name__}: {exc}); the file "
                         "is truncated or corrupt")
            return
        for (layout, digest), by in sorted(self.referenced.items()):
            if (layout, digest) not in self.present:
                self.problem(f"blob {digest} referenced by {by} is missing from "
                             f"{layout or './'}blobs/sha256/")

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name.removeprefix("./")
        source = tar.extractfile(member)
        if source is None:
            return
        if blob := _BLOB.match(name):
            self._blob(name, blob["layout"], blob["hex"], member.size, source)
        elif index := _INDEX.match(name):
            self._index(name, index["layout"], member.size, source)

    def _blob(self, name: str, layout: str, hex_digest: str, size: int,
              source: IO[bytes]) -> None:
        self.report.blobs += 1
        hasher = hashlib.sha256()
        head = b""
        for piece in _pieces(source):
            hasher.update(piece)
            if size <= MAX_MANIFEST_BYTES:
                head += piece
        digest = f"sha256:{hex_digest}"
        self.present.add((layout, digest))  # present, even if corrupt (reported once, here)
        if hasher.hexdigest() != hex_digest:
            self.problem(f"{name} does not match its name (content hashes to "
                         f"sha256:{hasher.hexdigest()})")
            return
        for child in _manifest_references(head):
            self.referenced.setdefault((layout, child), f"manifest {digest}")

    def _index(self, name: str, layout: str, size: int, source: IO[bytes]) -> None:
        if size > _MAX_INDEX_BYTES:
            self.problem(f"{name} is larger than {_MAX_INDEX_BYTES} bytes")
            return
        try:
            entries = parse_index(json.loads(source.read()), name)
        except (ValueError, LayoutError) as exc:
            self.problem(f"{name} is not a valid index ({exc})")
            return
        for position, entry in enumerate(entries):
            self.report.descriptors += 1
            if not entry.short_tag:
                self.problem(f"{name}: descriptor #{position} ({entry.digest}) has no "
                             f"{ANNOTATION_SHORT_TAG} annotation")
            self.referenced.setdefault((layout, entry.digest), name)


def _pieces(source: IO[bytes]) -> Iterator[bytes]:
    while piece := source.read(_PIECE):
        yield piece


def _manifest_references(data: bytes) -> list[str]:
    """Digests an image manifest or index refers to; [] for anything else (configs, layers)."""
    if not data.startswith(b"{"):
        return []
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        return []
    items: list[Any] = []
    if isinstance(doc.get("config"), dict) and isinstance(doc.get("layers"), list):
        items = [doc["config"], *doc["layers"]]
    elif isinstance(doc.get("manifests"), list):
        items = list(doc["manifests"])
    return [item["digest"] for item in items
            if isinstance(item, dict) and isinstance(item.get("digest"), str)]
