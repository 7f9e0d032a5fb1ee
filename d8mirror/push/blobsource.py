"""Where a layout's blobs are during push: its blob files, else their bytes in a plain tar.

The unpack leaves large blobs of plain tar archives in the archive and records their spans by
tree path (:class:`~d8mirror.bundle.BlobSpans`, ``<unified>/.d8mirror-blob-spans.json``). A
blob of the layout at tree path ``layout_rel`` is its file ``blobs/sha256/<hex>`` when present,
else the span recorded for that path, else missing (:class:`~d8mirror.errors.LayoutError`: the
bundle is incomplete). Blobs are uploaded from either; manifests are read from either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from d8mirror.bundle import BlobSpan, BlobSpans
from d8mirror.errors import IntegrityError, LayoutError, LocalContentError, wrap_os_error
from d8mirror.layout import Layout
from d8mirror.registry import RegistryClient


@dataclass(frozen=True)
class LayoutBlobs:
    """The blobs of one layout of the unpacked tree."""

    layout: Layout
    layout_rel: str = ""  # the layout's path in the tree ("" = its root): the spans' key
    spans: BlobSpans = field(default_factory=BlobSpans)

    def span(self, digest: str) -> BlobSpan | None:
        """Where ``digest`` is in an archive, if its blob file is absent."""
        if self.layout.blob_path(digest).is_file():
            return None
        return self.spans.find(self.layout_rel, digest)

    def holds(self, digest: str) -> bool:
        """Whether the layout has blob ``digest`` (its file, or its span of an archive)."""
        return self.layout.blob_path(digest).is_file() or (
            self.spans.find(self.layout_rel, digest) is not None
        )

    def read(self, digest: str, *, limit: int) -> bytes:
        """A small blob (a manifest) whole; one larger than ``limit`` is refused."""
        span = self.span(digest)
        if span is None:
            return self.layout.read_blob(digest, limit=limit)
        if span.size > limit:
            raise IntegrityError(
                f"blob {digest} at byte {span.offset} of {span.archive} is "
                f"larger than {limit} bytes: refusing to load it; the content "
                "is not what it claims to be (a manifest)"
            )
        try:
            with span.archive.open("rb") as archive:
                archive.seek(span.offset)
                data = archive.read(span.size)
        except OSError as exc:
            raise wrap_os_error(exc, str(span.archive)) from exc
        if len(data) != span.size:
            raise LayoutError(
                f"{span.archive} ends inside blob {digest}: the archive was "
                "truncated after the unpack; copy it again"
            )
        return data

    def upload(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        size: int | None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload blob ``digest`` (``size`` bytes, when known) into ``repository`` from its
        file or its span of an archive; ``on_progress(n)`` per chunk sent."""
        path = self.layout.blob_path(digest)
        if path.is_file():
            client.upload_blob(repository, digest, path, size=size, on_progress=on_progress)
            return
        span = self.spans.find(self.layout_rel, digest)
        if span is None:
            raise LayoutError(
                f"layout {self.layout.path} lacks blob {digest}: the bundle is "
                "incomplete; copy the archive again or pull it again"
            )
        if size is not None and size != span.size:
            raise LocalContentError(
                f"{span.archive} holds {span.size} bytes for blob "
                f"{digest}, not the {size} its manifest says",
                expected=str(size),
                actual=str(span.size),
            )
        client.upload_blob(
            repository,
            digest,
            span.archive,
            offset=span.offset,
            size=span.size,
            on_progress=on_progress,
        )
