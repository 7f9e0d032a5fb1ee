"""Package archives kept by content in the working dir and hard-linked into bundle dirs.

``<work>/archives/<package>/<key>/`` holds hard links to the files of the archive last packed
for ``<package>`` from content ``<key>`` (the tar or its chunks, with their checksum sidecars)
and ``record.json`` (file names, sizes, sidecar texts and the archive's summary). A re-pull of
unchanged content into another bundle directory links those files in instead of packing
again: not one archive byte is read or written. The links cost no space while the bundle
holds the same files; only the newest key of a package is kept. Where hard links are not
possible (the bundle on another filesystem than the working dir) nothing is cached.

The cache trusts what it recorded: a cached file whose size or sidecar changed is not used.
A file rewritten in place with the same size is not detected here; push checks every
archive against its ``.sha256`` sidecar before it uses it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from d8mirror.bundle.chunks import remove_stale_finals
from d8mirror.files import link_atomic
from d8mirror.names import gost_sidecar, sha256_sidecar

from .packing import ArchiveInfo

RECORD = "record.json"


def _sidecars(path: Path) -> list[Path]:
    return [p for p in (sha256_sidecar(path), gost_sidecar(path)) if p.is_file()]


class ArchiveCache:
    """See the module docstring; ``root`` is ``<work>/archives``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, package: str, key: str) -> Path:
        return self.root / package / key

    def restore(
        self, package: str, key: str, bundle_dir: Path, *, gost: bool
    ) -> ArchiveInfo | None:
        """Link the cached archive of ``package`` at ``key`` into ``bundle_dir``; its summary
        (paths in ``bundle_dir``), or None when nothing usable is cached."""
        record = self._record(package, key)
        if record is None:
            return None
        cached = self._dir(package, key)
        placed: list[Path] = []
        try:
            bundle_dir.mkdir(parents=True, exist_ok=True)
            for name in record["files"]:
                dest = bundle_dir / name
                link_atomic(cached / name, dest)
                placed.append(dest)
        except OSError:
            for path in placed:
                path.unlink(missing_ok=True)
            return None
        archive = dict(record["archive"])
        files = tuple(bundle_dir / name for name in archive["files"])
        # .gostsum files are written at the end of a successful pull, not kept here.
        remove_stale_finals(bundle_dir / archive["name"], files, gost=False)
        return ArchiveInfo(
            path=str(bundle_dir / archive["name"]),
            files=[str(f) for f in files],
            size=archive["size"],
            sha256=archive["sha256"],
            gost=archive.get("gost", {}),
        )

    def _record(self, package: str, key: str) -> dict[str, Any] | None:
        directory = self._dir(package, key)
        try:
            record: dict[str, Any] = json.loads((directory / RECORD).read_text())
            for name, size in record["files"].items():
                if (directory / name).stat().st_size != size:
                    return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return record

    def store(self, package: str, key: str, archive: ArchiveInfo) -> bool:
        """Keep links to a freshly packed archive (``archive``: the pack summary with paths in
        the bundle dir) and drop older keys of ``package``. Best effort: False, and nothing
        kept, when it cannot (no hard links across filesystems, a full disk)."""
        files = [Path(f) for f in archive.files]
        members = [p for f in files for p in (f, *_sidecars(f))]
        directory = self._dir(package, key)
        staging = directory.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
        try:
            staging.mkdir(parents=True)
            for path in members:
                os.link(path, staging / path.name)
            record = {
                "files": {p.name: p.stat().st_size for p in members},
                "archive": {
                    "name": Path(archive.path).name,
                    "files": [f.name for f in files],
                    "size": archive.size,
                    "sha256": archive.sha256,
                    "gost": archive.model_dump(mode="json")["gost"],
                },
            }
            (staging / RECORD).write_text(json.dumps(record, sort_keys=True))
            self._replace_package(package, key, staging)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True

    def _replace_package(self, package: str, key: str, staging: Path) -> None:
        directory = self._dir(package, key)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        for other in (self.root / package).iterdir():
            if other.name != key and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)
