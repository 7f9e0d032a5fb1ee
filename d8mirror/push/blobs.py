"""Which repository of the target registry already holds a blob (cross-repository mounts).

Filled while pushing: a blob found (HEAD) or uploaded in one repository can be mounted into
another instead of being uploaded again. Thread-safe. The core keeps no instance of its own:
the Prefect layer owns one per target registry and process (``tasks.runtime.blob_locations``).
"""

from __future__ import annotations

import threading


class BlobLocations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[str, str] = {}

    def remember(self, digest: str, repository: str) -> None:
        with self._lock:
            self._where.setdefault(digest, repository)

    def source_for(self, digest: str, repository: str) -> str | None:
        """Another repository known to hold ``digest`` (never ``repository`` itself)."""
        with self._lock:
            source = self._where.get(digest)
        return source if source is not None and source != repository else None
