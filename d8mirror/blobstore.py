"""A content-addressed blob store shared by every layout of a run and reused across runs.

On disk: ``<root>/sha256/<hex>`` holds finished blobs, ``<root>/staging/`` holds writers' temp
files (same filesystem, so a finished blob appears with one ``os.replace`` and a half-written one
never sits under its final name).

Trust model ("re-verified on reuse", Q8): a blob committed by this process is trusted; a
blob found on disk (left by an earlier run) is hashed once per process before it is reused, and a
corrupt one is deleted so the caller fetches it again. Layouts get blobs by hard link (copy when
the layout lives on another filesystem), so the store is never written through a layout.

Thread safety: every operation on one digest is serialised by a per-digest lock; concurrent
writers of the same digest are fine (the first commit wins, later staged files are discarded).
Downloaders of one digest take turns through :meth:`BlobStore.download_lock`, so a blob is
downloaded once however many users want it. Those guarantees hold for the users of one store
object: a process keeps one per root (the Prefect layer's ``tasks.runtime.blob_store``).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import BinaryIO

from d8mirror.errors import DigestMismatchError, IntegrityError, LayoutError, wrap_os_error
from d8mirror.files import place_file
from d8mirror.hashing import sha256_bytes_digest, sha256_file_digest
from d8mirror.reference import validate_digest


def read_capped(path: Path, *, limit: int, what: str) -> bytes:
    """Read a small file whole, refusing one larger than ``limit`` bytes."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise IntegrityError(
            f"{what} at {path} is larger than {limit} bytes: refusing to load it; "
            "the content is not what it claims to be (a manifest or config)"
        )
    return data


class BlobStore:
    """Blobs by digest under ``root/sha256/<hex>``; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "sha256"
        self._staging = self.root / "staging"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise wrap_os_error(exc, str(self.root)) from exc
        self._verified: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._downloads: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- paths ------------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Final path of ``digest`` (raises InvalidReferenceError for anything but sha256)."""
        return self._blobs / validate_digest(digest).split(":", 1)[1]

    def staging_path(self, digest: str) -> Path:
        """A fresh temp path inside the store for a writer of ``digest``."""
        hex_part = validate_digest(digest).split(":", 1)[1]
        return self._staging / f"{hex_part}.{uuid.uuid4().hex}.partial"

    def incoming_path(self, digest: str) -> Path:
        """Where a downloader of ``digest`` writes it (the same name every time, so a
        download cut short resumes from its ``.partial``); hold :meth:`download_lock`."""
        path = self.root / "incoming" / validate_digest(digest).split(":", 1)[1]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise wrap_os_error(exc, str(path.parent)) from exc
        return path

    def download_lock(self, digest: str) -> threading.Lock:
        """Held by whoever downloads ``digest`` into this store: two downloaders (fetchers of
        different packages, a warm-up and a flow) never write the same partial file at once,
        and the second one finds the blob committed."""
        with self._guard:
            return self._downloads.setdefault(digest, threading.Lock())

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    # -- queries ----------------------------------------------------------------------------
    def has(self, digest: str, *, size: int | None = None) -> bool:
        """Whether the blob exists (and, when ``size`` is given, has that size)."""
        try:
            stat = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or stat.st_size == size

    def verified(self, digest: str) -> bool:
        """True when the blob is present and hashes to its name; a corrupt blob is deleted.

        Each digest is hashed at most once per process (later calls only check presence).
        """
        path = self.path(digest)
        with self._lock(digest):
            if digest in self._verified:
                if path.is_file():
                    return True
                self._verified.discard(digest)
                return False
            if not path.is_file():
                return False
            if sha256_file_digest(path) != digest:
                path.unlink(missing_ok=True)
                return False
            self._verified.add(digest)
            return True

    # -- writes -----------------------------------------------------------------------------
    def commit(self, digest: str, staged: Path, *, trusted: bool = False) -> Path:
        """Move ``staged`` into place as ``digest``; verify it first unless ``trusted``.

        Raises DigestMismatchError (after removing ``staged``) when the content is wrong.
        When another writer already committed the digest, ``staged`` is discarded.
        """
        final = self.path(digest)
        try:
            if not trusted:
                actual = sha256_file_digest(staged)
                if actual != digest:
                    staged.unlink(missing_ok=True)
                    raise DigestMismatchError(
                        f"blob {staged} hashes to {actual}, not {digest}: the download was "
                        "corrupted; it was discarded and will be fetched again on retry",
                        expected=digest,
                        actual=actual,
                    )
            with self._lock(digest):
                if digest in self._verified and final.is_file():
                    staged.unlink(missing_ok=True)
                else:
                    os.replace(staged, final)
                    self._verified.add(digest)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise wrap_os_error(exc, str(final)) from exc
        return final

    def put_bytes(self, data: bytes) -> str:
        """Store a small blob (a manifest or config) atomically; return its digest."""
        digest = sha256_bytes_digest(data)
        if self.has(digest, size=len(data)) and self.verified(digest):
            return digest
        staged = self.staging_path(digest)
        try:
            staged.write_bytes(data)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise wrap_os_error(exc, str(staged)) from exc
        self.commit(digest, staged, trusted=True)
        return digest

    # -- reads ------------------------------------------------------------------------------
    def _existing(self, digest: str) -> Path:
        path = self.path(digest)
        if not path.is_file():
            raise LayoutError(
                f"blob {digest} is not in the blob store {self.root}: fetch it first "
                "(a rerun of the pull fetches what is missing)"
            )
        return path

    def read_bytes(self, digest: str, *, limit: int) -> bytes:
        """The whole blob, refusing one larger than ``limit`` bytes (IntegrityError)."""
        return read_capped(self._existing(digest), limit=limit, what=f"blob {digest}")

    def open(self, digest: str) -> BinaryIO:
        """A binary read handle on the blob (the caller closes it)."""
        return self._existing(digest).open("rb")

    def link_into(self, digest: str, dest: Path) -> None:
        """Place the blob at ``dest`` (hard link, or copy across filesystems), atomically.

        A no-op when ``dest`` already exists with the blob's size.
        """
        src = self._existing(digest)
        try:
            if dest.is_file() and dest.stat().st_size == src.stat().st_size:
                return
        except OSError as exc:
            raise wrap_os_error(exc, str(dest)) from exc
        place_file(src, dest)
