"""Which repository of the target registry already holds a blob (cross-repository mounts).

Filled while pushing: a blob found (HEAD) or uploaded in one repository can be mounted into
another instead of being uploaded again. Thread-safe; one instance per target registry and
process (:meth:`BlobLocations.shared`). A blob pushed ahead of its layout (the CLI's warm-up)
is recorded with what was done, and the layout push that finds it claims that outcome once,
so its counters read as if it had pushed the blob itself.
"""

from __future__ import annotations

import threading

_shared: dict[str, BlobLocations] = {}
_shared_guard = threading.Lock()


class BlobLocations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[str, str] = {}
        self._ahead: dict[tuple[str, str], str] = {}

    @classmethod
    def shared(cls, registry: str) -> BlobLocations:
        """The one instance of ``registry`` in this process."""
        with _shared_guard:
            return _shared.setdefault(registry, cls())

    def remember(self, digest: str, repository: str) -> None:
        with self._lock:
            self._where.setdefault(digest, repository)

    def source_for(self, digest: str, repository: str) -> str | None:
        """Another repository known to hold ``digest`` (never ``repository`` itself)."""
        with self._lock:
            source = self._where.get(digest)
        return source if source is not None and source != repository else None

    def pushed_ahead(self, digest: str, repository: str, outcome: str) -> None:
        """``digest`` was put into ``repository`` ahead of its layout ("uploaded"/"mounted")."""
        with self._lock:
            self._where.setdefault(digest, repository)
            self._ahead[(digest, repository)] = outcome

    def claim_ahead(self, digest: str, repository: str) -> str | None:
        """What was done ahead for ``digest`` in ``repository``; answered once."""
        with self._lock:
            return self._ahead.pop((digest, repository), None)
