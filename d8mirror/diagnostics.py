"""What an error means to the person who ran the command: its category, where it happened and
what to do, as plain data (the CLI renders it; :mod:`app.console`).

    diagnose(exc, items)   Diagnosis: category ("registry unreachable", "access denied", ...),
                           what failed, where (registry, repository, file), the cause, hints,
                           and the failed items of a run (package, layout, file -> cause)
    is_expected(exc)       whether ``exc`` is an error d8mirror raises on purpose (the error
                           tree of :mod:`d8mirror.errors`, also when wrapped by a caller with
                           ``raise ... from``): such an error is told, not traced back

The category comes from the most specific error of the ``raise ... from`` chain: a
``DiscoveryError`` caused by a ``RegistryNetworkError`` is "registry unreachable". Classified by
type only, never by message text. Messages are the errors' own, which never hold credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from d8mirror import errors as e
from d8mirror.transfer import errors as te


@dataclass(frozen=True)
class Category:
    """A kind of failure a user can act on: its name and what to do about it."""

    name: str
    hints: tuple[str, ...]


REGISTRY_UNREACHABLE = Category(
    "registry unreachable",
    (
        "check the registry address and port, that the registry runs, and that this host "
        "reaches it (DNS, proxy, firewall)",
        "on a slow link raise D8_MIRROR_TIMEOUT; then run the same command again (work "
        "already done is reused)",
    ),
)
AUTHENTICATION_FAILED = Category(
    "authentication failed",
    (
        "check the login and password: pull takes --source-login/--source-password or "
        "--license, push -u/--registry-login and -p/--registry-password",
        "or the Prefect Secret block named by --credentials-block",
    ),
)
ACCESS_DENIED = Category(
    "access denied",
    (
        "the credentials were accepted but do not grant this action on this repository: "
        "ask the registry's administrator for pull (source) or push (target) rights",
        "check the repository path (--source, or the push target)",
    ),
)
STORAGE_ACCESS = Category(
    "access denied",
    (
        "check the object storage credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE) and their rights on the bucket",
    ),
)
TLS_FAILED = Category(
    "TLS verification failed",
    (
        "trust the registry's CA with --ca-file PATH (or SSL_CERT_FILE)",
        "or skip the check with --tls-skip-verify (the connection is then not authenticated)",
        "a registry that speaks plain HTTP needs --insecure",
    ),
)
NOT_FOUND = Category(
    "not found",
    (
        "check the path: the source (--source, --packages-path-suffix), the package names "
        "(--include-package), or the bundle and --file paths",
    ),
)
RATE_LIMITED = Category(
    "rate limited",
    ("the registry asks to slow down: wait, lower --concurrency, then run the command again",),
)
REGISTRY_FAILED = Category(
    "registry error",
    ("the registry failed on its side: run the command again later, or ask its administrator",),
)
PROTOCOL = Category(
    "unexpected registry answer",
    (
        "check that the address is the registry's API (not a web page or a proxy's login "
        "page), and --insecure for a plain-HTTP registry",
    ),
)
DISK_FULL = Category(
    "disk full",
    (
        "free space there, or put the working directory on a bigger volume with --tmp-dir",
        "pull: split archives with --images-bundle-chunk-size",
    ),
)
CORRUPT_BUNDLE = Category(
    "corrupt bundle",
    (
        "copy the bundle again from its source, or pull it again",
        "check a bundle offline with: d8mirror verify <bundle>",
    ),
)
CORRUPT_DATA = Category(
    "corrupt data",
    ("bytes did not match their digest: run the command again (it retries from a clean copy)",),
)
INVALID_IMAGE = Category(
    "invalid source image",
    ("the source holds an image d8mirror cannot mirror as it is: report it to its publisher",),
)
INVALID_CONFIGURATION = Category(
    "invalid configuration",
    ("check the flags and environment variables: d8mirror <command> --help",),
)
INCOMPLETE_UPLOAD = Category(
    "incomplete upload",
    ("the remote bundle was not uploaded whole: upload it again (d8mirror pull --upload-to)",),
)
DELTA_BASE_MISSING = Category(
    "target lacks the delta's base",
    (
        "push the earlier delta bundles, or the full bundle, into this registry first",
        "or pull a new delta against the site's current receipt: d8mirror receipt REGISTRY "
        "-o receipt.json, then d8mirror pull ... --delta-from receipt.json",
    ),
)
CANCELLED = Category("cancelled", ("run the same command again to complete it",))
RUN_FAILED = Category(
    "run failed",
    (
        "fix the cause named for each item, then run the same command again: "
        "what was done whole is reused",
    ),
)
FAILED = Category("failed", ("run the same command again; use -v to see the details",))

#: Type -> category, most specific first (the first ``isinstance`` match wins). Wrappers that
#: only add context (DiscoveryError, WriteCheckError, ...) fall to FAILED, so that the error
#: they were raised ``from`` decides.
CATEGORIES: tuple[tuple[type[BaseException], Category], ...] = (
    (e.TLSError, TLS_FAILED),
    (te.StorageAccessError, STORAGE_ACCESS),
    (e.UnauthorizedError, AUTHENTICATION_FAILED),
    (e.DeniedError, ACCESS_DENIED),
    (e.NotFoundError, NOT_FOUND),
    (e.PathNotFoundError, NOT_FOUND),
    (e.RateLimitedError, RATE_LIMITED),
    (e.RegistryNetworkError, REGISTRY_UNREACHABLE),
    (e.ServerError, REGISTRY_FAILED),
    (e.ProtocolError, PROTOCOL),
    (e.RegistryError, REGISTRY_FAILED),
    (e.DiskSpaceError, DISK_FULL),
    (e.DeltaBaseMissingError, DELTA_BASE_MISSING),
    (te.IncompleteUploadError, INCOMPLETE_UPLOAD),
    (e.LocalContentError, CORRUPT_BUNDLE),
    (e.DigestMismatchError, CORRUPT_DATA),
    (e.IntegrityError, CORRUPT_BUNDLE),
    (e.LayoutError, CORRUPT_BUNDLE),
    (e.BundleError, CORRUPT_BUNDLE),
    (e.InvalidManifestError, INVALID_IMAGE),
    (e.InvalidImageMetadataError, INVALID_IMAGE),
    (e.ConfigError, INVALID_CONFIGURATION),
    (e.InvalidReferenceError, INVALID_CONFIGURATION),
    (e.ProbeCancelled, CANCELLED),
    (e.RunFailed, RUN_FAILED),
)


def category_of(exc: BaseException) -> Category:
    """The category of ``exc`` alone (FAILED when no entry of :data:`CATEGORIES` matches)."""
    for kind, category in CATEGORIES:
        if isinstance(exc, kind):
            return category
    return FAILED


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was explicitly raised from, and so on (cycles cut)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an error d8mirror raises on purpose."""
    return any(isinstance(c, e.MirrorError) for c in causes(exc))


@dataclass(frozen=True)
class Diagnosis:
    """One failure told for a person: ``category`` and ``hints`` say what kind and what to
    do, ``what`` what failed, ``where`` (label, value) pairs, ``cause`` the underlying error,
    ``items`` the failed parts of a run (name, cause)."""

    category: str
    what: str
    where: tuple[tuple[str, str], ...] = ()
    cause: str = ""
    hints: tuple[str, ...] = ()
    items: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def diagnose(exc: BaseException, items: Sequence[tuple[str, str]] = ()) -> Diagnosis:
    """The :class:`Diagnosis` of ``exc``; ``items``: the failed parts of a run, if known."""
    chain: list[BaseException] = [c for c in causes(exc) if isinstance(c, e.MirrorError)]
    chain = chain or [exc]
    decisive = next((c for c in reversed(chain) if category_of(c) is not FAILED), chain[0])
    category = category_of(decisive)
    what = _message(exc)
    cause = ""
    if decisive is not exc:
        cause = _message(decisive)
        what = _without(what, cause)
    hints = category.hints
    if items and category is RUN_FAILED:
        # every item failed for one kind of reason: that kind names the failure
        kinds = {category_of_text(text) for _, text in items}
        if len(kinds) == 1:
            (only,) = kinds
            if only is not None and only is not FAILED:
                category, hints = only, only.hints + RUN_FAILED.hints
    return Diagnosis(
        category=category.name,
        what=what,
        where=tuple(_where(chain)),
        cause=cause,
        hints=hints,
        items=tuple((name, _one_line(text)) for name, text in items),
    )


def category_of_text(text: str) -> Category | None:
    """The category of an item's error recorded as ``TypeName: message`` (how reports keep
    them), by the type's name in the error tree; None when the name is not one of it."""
    name = text.partition(":")[0].strip()
    for kind, category in CATEGORIES:
        if any(k.__name__ == name for k in _subclasses(kind)):
            return category
    return None


def _subclasses(kind: type[BaseException]) -> Iterator[type[BaseException]]:
    yield kind
    for sub in kind.__subclasses__():
        yield from _subclasses(sub)


def _message(exc: BaseException) -> str:
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _without(what: str, cause: str) -> str:
    """``what`` without the cause it quotes at its end (``context: cause``)."""
    if cause and what.endswith(cause) and len(what) > len(cause):
        return what[: -len(cause)].rstrip(" :;-") or what
    return what


def _where(chain: Sequence[BaseException]) -> Iterator[tuple[str, str]]:
    """Registry, repository and file the errors of ``chain`` name (the innermost first)."""
    seen: set[tuple[str, str]] = set()
    for exc in reversed(chain):
        for pair in _places(exc):
            if pair[1] and pair not in seen:
                seen.add(pair)
                yield pair


def _places(exc: BaseException) -> Iterator[tuple[str, str]]:
    if isinstance(exc, e.RegistryError) and exc.url:
        parts = urlsplit(exc.url)
        host = parts.netloc.rpartition("@")[2]  # never a user:password@ (urls are redacted)
        if host:
            yield "registry", host
        repository = _repository(parts.path)
        if repository:
            yield "repository", repository
    if isinstance(exc, (e.DiskSpaceError, e.PathNotFoundError)):
        yield "file", exc.path


def _repository(path: str) -> str:
    """``a/b`` of ``/v2/a/b/manifests/x`` (also blobs, tags, uploads); "" for ``/v2/``."""
    if not path.startswith("/v2/"):
        return ""
    segments = path[len("/v2/") :].split("/")
    for index, segment in enumerate(segments):
        if segment in ("manifests", "blobs", "tags") and index > 0:
            return "/".join(segments[:index])
    return ""
