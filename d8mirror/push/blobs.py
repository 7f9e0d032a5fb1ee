"""Which repository of the target registry already holds a blob (cross-repository mounts).

Filled while pushing: a blob found (HEAD) or uploaded in one repository can be mounted into
another instead of being uploaded again. A delta bundle's pre-check seeds it with where the
target holds each omitted blob (:meth:`BlobLocations.seed`): those blobs are not in the bundle,
so they can only be mounted (:meth:`BlobLocations.is_omitted`). Thread-safe. The core keeps
no instance of its own: the Prefect layer owns one per target registry and process
(``tasks.runtime.blob_locations``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping


class BlobLocations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[str, str] = {}
        self._omitted: set[str] = set()

    def remember(self, digest: str, repository: str) -> None:
        with self._lock:
            self._where.setdefault(digest, repository)

    def source_for(self, digest: str, repository: str) -> str | None:
        """Another repository known to hold ``digest`` (never ``repository`` itself)."""
        with self._lock:
            source = self._where.get(digest)
        return source if source is not None and source != repository else None

    def seed(self, found: Mapping[str, str], omitted: Iterable[str]) -> None:
        """A delta's pre-check: ``found`` (digest → repository holding it) wins over what was
        known (it is the freshest answer); ``omitted``: the digests the bundle lacks."""
        with self._lock:
            self._where.update(found)
            self._omitted.update(omitted)

    def is_omitted(self, digest: str) -> bool:
        """Whether ``digest`` is a blob a delta bundle being pushed leaves out."""
        with self._lock:
            return digest in self._omitted
