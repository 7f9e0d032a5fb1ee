"""Build a receipt by scanning the target registry (``d8mirror receipt``; the push's receipt too).

What the target holds for packages, found the way a reader of the target finds it::

    <packages root>:<name>                   discovery tags: the package names
    ─▶ per package: <root>/<name>, <root>/<name>/version, <root>/<name>/extra/<x>
    ─▶ tag lists (paginated) ─▶ manifests by tag (GET), index children by digest
    ─▶ configs and layers of every image: the receipt's blobs

The packages root is where the push puts the bundle's ``packages`` tree (the target repository
joined with ``--packages-path-suffix``); the receipt names every repository by its path in the
bundle (``packages/console/extra/scanner``), so the leading ``packages`` segment stands for the
root. The discovery tags themselves are images of repository ``packages``, as a push records
them, so a scan of a target equals the receipt of the push that filled it, but for
``bundles``: which bundles were applied is not in the registry, a scan lists none.

Extra images (``<name>/extra/<x>``) have no tag that lists them. When the registry serves its
catalog (``/v2/_catalog``), the repositories under ``<root>/<name>/extra/`` are taken from it
(one paginated listing for the whole scan). When it does not (401, 403, 404: many production
registries refuse it), each main image's ``extra_images.json`` names them, as the pull finds
them: its layers are fetched top first into a temporary directory, one at a time, until the
file is found. ``catalog=False`` (``--no-catalog``) takes that way at once (the catalog of a
large shared registry may be slow to list). Only that fallback reads blob bytes; everything
else is tag lists and manifests.

Requests run on a bounded pool (``workers``), each retried on transient errors
(:mod:`d8mirror.retry`); a manifest is fetched and read once per digest. Nothing here writes to
the registry.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from d8mirror.errors import (
    DeniedError,
    NotFoundError,
    ProtocolError,
    ReceiptError,
    UnauthorizedError,
)
from d8mirror.imagefs import parse_extra_images_json, read_file_from_layers
from d8mirror.mediatypes import INDEX_TYPES
from d8mirror.names import EXTRA, PACKAGES, VERSION, VEX_SUFFIX
from d8mirror.push.routing import Router
from d8mirror.receipt import HeldImage, Receipt
from d8mirror.reference import Repository, is_valid_digest
from d8mirror.registry import Manifest, RegistryClient
from d8mirror.retry import RetryPolicy, default_policy

log = logging.getLogger("d8mirror.receipt")

Warn = Callable[[str], None]

#: Catalog answers that mean "this registry does not list its repositories to us".
_NO_CATALOG = (UnauthorizedError, DeniedError, NotFoundError, ProtocolError)
_MAX_NESTING = 4
EXTRA_IMAGES_FILE = "extra_images.json"


# -- the root --------------------------------------------------------------------------------------
def packages_root(target: Repository, router: Router) -> Repository:
    """Where the bundle's ``packages`` tree is pushed (its discovery tags live there)."""
    return router.packages_index(target)


def receipt_root(target: Repository, router: Router, *, omit_host: bool = False) -> str:
    """The receipt's ``root``: ``<host>/<path of the packages root>``, or the path only."""
    root = packages_root(target, router)
    return root.path if omit_host else str(root)


def root_path(root: str) -> str:
    """A receipt root without its registry host (the first segment when it names a host:
    it holds a ``.`` or a ``:``, or is ``localhost``, as in image references)."""
    head, sep, rest = root.partition("/")
    if sep and ("." in head or ":" in head or head == "localhost"):
        return rest
    return root


def check_same_root(receipt: Receipt, root: str, *, where: str) -> None:
    """ReceiptError unless ``receipt`` describes the packages root ``root`` (hosts aside: a
    receipt may omit its host, and a registry may be reached by another name)."""
    if root_path(receipt.root) != root_path(root):
        raise ReceiptError(
            f"receipt {where} describes packages root {receipt.root!r}, not {root!r}: give the "
            "receipt written for this target (or none, and the target is scanned)"
        )


# -- scanning --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holdings:
    """What a scan found: images (repositories relative to the packages root) and blobs."""

    images: tuple[HeldImage, ...]
    blobs: frozenset[str]

    def receipt(self, root: str, bundles: Iterable[str] = ()) -> Receipt:
        return Receipt.build(root, self.images, self.blobs, bundles)


def scan_receipt(
    client: RegistryClient,
    target: Repository,
    router: Router,
    *,
    omit_host: bool = False,
    bundles: Iterable[str] = (),
    workers: int = 8,
    catalog: bool = True,
    warn: Warn | None = None,
) -> Receipt:
    """The receipt of what ``target`` holds for packages now (see the module docstring)."""
    scanner = TargetScanner(client, target, router, workers=workers, catalog=catalog, warn=warn)
    holdings = scanner.scan()
    return holdings.receipt(receipt_root(target, router, omit_host=omit_host), bundles)


class TargetScanner:
    """One scan of one target; see the module docstring."""

    def __init__(
        self,
        client: RegistryClient,
        target: Repository,
        router: Router,
        *,
        workers: int = 8,
        catalog: bool = True,
        retry: RetryPolicy | None = None,
        warn: Warn | None = None,
    ) -> None:
        self.client = client
        self.target = target
        self.router = router
        self.workers = max(1, workers)
        self.retry = retry or default_policy()
        self.warn = warn or log.warning
        self._blobs_of: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._catalog: list[str] | None = None
        self._catalog_read = not catalog  # catalog=False: never asked

    def scan(self) -> Holdings:
        names = self._tags(self._path(PACKAGES))
        repositories = [PACKAGES]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="receipt-scan") as pool:
            for found in pool.map(self._package_repositories, names):
                repositories += found
            listed = list(pool.map(lambda repo: (repo, self._tags(self._path(repo))), repositories))
            wanted = [(repo, tag) for repo, tags in listed for tag in tags]
            held = list(pool.map(lambda item: self._image(*item), wanted))
        images = [image for image in held if image is not None]
        blobs: set[str] = set()
        for image in images:
            blobs |= self._blobs_of[image.digest]
        return Holdings(tuple(sorted(images)), frozenset(blobs))

    # -- repositories ------------------------------------------------------------------------
    def _path(self, tree_repository: str) -> str:
        """The target path of a repository named by its path in the bundle."""
        if tree_repository == PACKAGES:
            return packages_root(self.target, self.router).path
        return self.router.repository(self.target, tree_repository).path

    def _package_repositories(self, name: str) -> list[str]:
        main = f"{PACKAGES}/{name}"
        extras = self._extras_from_catalog(name)
        if extras is None:
            extras = self._extras_from_images(main)
        return [main, f"{main}/{VERSION}", *(f"{main}/{EXTRA}/{x}" for x in sorted(set(extras)))]

    def _extras_from_catalog(self, name: str) -> list[str] | None:
        catalog = self._read_catalog()
        if catalog is None:
            return None
        prefix = self._path(f"{PACKAGES}/{name}/{EXTRA}") + "/"
        return [repo.removeprefix(prefix) for repo in catalog if repo.startswith(prefix)]

    def _read_catalog(self) -> list[str] | None:
        """The registry's catalog, read once; None when the registry does not serve it."""
        with self._lock:
            if not self._catalog_read:
                self._catalog_read = True
                try:
                    self._catalog = self.retry.call(
                        self.client.list_repositories, what="list the registry's catalog"
                    )
                except _NO_CATALOG as exc:
                    self.warn(
                        f"{self.target.registry} does not list its repositories ({exc}); extra "
                        f"images are found from each main image's {EXTRA_IMAGES_FILE}"
                    )
            return self._catalog

    def _extras_from_images(self, main: str) -> list[str]:
        path = self._path(main)
        extras: list[str] = []
        for tag in self._tags(path):
            if tag.endswith(VEX_SUFFIX):
                continue
            extras += parse_extra_images_json(self._extra_images_json(path, tag) or b"{}")
        return extras

    def _extra_images_json(self, path: str, tag: str) -> bytes | None:
        """``extra_images.json`` of ``path:tag`` (an index: its first image that has one)."""
        for manifest in self._image_manifests(path, self._manifest(path, tag)):
            layers = [d["digest"] for d in _descriptors(manifest.json().get("layers"))]
            with tempfile.TemporaryDirectory(prefix="d8mirror-receipt-") as tmp:
                for index, digest in enumerate(reversed(layers)):
                    found = self._file_in_layer(path, digest, Path(tmp) / f"layer-{index}")
                    if found is not None:
                        return found
        return None

    def _file_in_layer(self, path: str, digest: str, dest: Path) -> bytes | None:
        """``extra_images.json`` in one layer, fetched to ``dest`` and removed again."""
        self.retry.call(
            partial(self.client.fetch_blob, path, digest, dest), what=f"fetch {path}@{digest}"
        )
        try:
            return read_file_from_layers([dest], EXTRA_IMAGES_FILE, top_first_any=True)
        finally:
            dest.unlink(missing_ok=True)

    def _image_manifests(self, path: str, manifest: Manifest, depth: int = 0) -> list[Manifest]:
        if not _is_index(manifest) or depth > _MAX_NESTING:
            return [manifest]
        images: list[Manifest] = []
        for child in _descriptors(manifest.json().get("manifests")):
            images += self._image_manifests(path, self._manifest(path, child["digest"]), depth + 1)
        return images

    # -- tags and manifests ------------------------------------------------------------------
    def _tags(self, path: str) -> list[str]:
        try:
            tags: list[str] = self.retry.call(
                lambda: self.client.list_tags(path), what=f"list the tags of {path}"
            )
        except NotFoundError:
            return []
        return tags

    def _manifest(self, path: str, reference: str) -> Manifest:
        manifest: Manifest = self.retry.call(
            lambda: self.client.get_manifest(path, reference), what=f"get {path}:{reference}"
        )
        return manifest

    def _image(self, repository: str, tag: str) -> HeldImage | None:
        """The image of ``repository:tag`` (its blobs remembered); None when the tag was
        deleted since its tag list was read."""
        path = self._path(repository)
        try:
            manifest = self._manifest(path, tag)
        except NotFoundError:
            self.warn(f"{path}:{tag} was listed but is gone: not in the receipt")
            return None
        self._walk(path, manifest, 0)
        return HeldImage(repository, tag, manifest.digest)

    def _walk(self, path: str, manifest: Manifest, depth: int) -> frozenset[str]:
        """The blobs of ``manifest`` (an index: of its children), remembered by digest."""
        with self._lock:
            known = self._blobs_of.get(manifest.digest)
        if known is not None:
            return known
        doc = manifest.json()
        blobs: set[str] = set()
        if _is_index(manifest):
            if depth > _MAX_NESTING:
                raise ReceiptError(f"{path}@{manifest.digest} nests indexes too deeply")
            for child in _descriptors(doc.get("manifests")):
                blobs |= self._child_blobs(path, child["digest"], depth + 1)
        else:
            config = [doc["config"]] if isinstance(doc.get("config"), dict) else []
            blobs |= {d["digest"] for d in _descriptors([*config, *(doc.get("layers") or [])])}
        found = frozenset(blobs)
        with self._lock:
            self._blobs_of[manifest.digest] = found
        return found

    def _child_blobs(self, path: str, digest: str, depth: int) -> frozenset[str]:
        with self._lock:
            known = self._blobs_of.get(digest)
        if known is not None:
            return known
        return self._walk(path, self._manifest(path, digest), depth)


def _is_index(manifest: Manifest) -> bool:
    return manifest.media_type in INDEX_TYPES or "manifests" in manifest.json()


def _descriptors(items: Any) -> list[dict[str, Any]]:
    """The descriptors of a manifest's list that carry a digest a receipt can hold
    (``sha256:<64 hex>``, what d8mirror pushes; others are not content it mirrors)."""
    if not isinstance(items, list):
        return []
    return [
        d
        for d in items
        if isinstance(d, dict) and isinstance(d.get("digest"), str) and is_valid_digest(d["digest"])
    ]
