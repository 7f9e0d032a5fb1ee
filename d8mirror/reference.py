"""Image references ``host[:port]/path[:tag][@sha256:hex]`` and the OCI name grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from d8mirror.errors import InvalidReferenceError

# OCI distribution spec: path components separated by "/".
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
MAX_REPOSITORY_LENGTH = 255


def is_valid_repository(name: str) -> bool:
    return len(name) <= MAX_REPOSITORY_LENGTH and bool(_REPOSITORY_RE.match(name))


def is_valid_component(name: str) -> bool:
    """One path component (a package or extra-image name that becomes a directory)."""
    return len(name) <= 128 and bool(_COMPONENT_RE.match(name))


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def is_valid_digest(digest: str) -> bool:
    return bool(_DIGEST_RE.match(digest))


def validate_repository(name: str) -> str:
    if not is_valid_repository(name):
        raise InvalidReferenceError(
            f"invalid repository name {name!r}: path components can only contain lowercase "
            "letters, digits and separators (., _, __, -), separated by '/'"
        )
    return name


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise InvalidReferenceError(
            f"invalid tag {tag!r}: up to 128 characters of letters, digits, '_', '.', '-', "
            "not starting with '.' or '-'"
        )
    return tag


def validate_digest(digest: str) -> str:
    if not is_valid_digest(digest):
        raise InvalidReferenceError(f"invalid digest {digest!r}: expected sha256:<64 hex>")
    return digest


@dataclass(frozen=True, order=True)
class Repository:
    """A repository on a registry: ``registry`` is ``host[:port]``, ``path`` is the name."""

    registry: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Repository:
        """Parse ``host[:port]/path`` (an ``http(s)://`` prefix is stripped)."""
        text = strip_scheme(text).rstrip("/")
        host, sep, path = text.partition("/")
        if not sep or not path:
            raise InvalidReferenceError(
                f"{text!r} is missing the repository path (a registry root is not supported); "
                f"example: {host or 'registry.example.com'}/deckhouse"
            )
        if not host:
            raise InvalidReferenceError(f"{text!r} has no registry host")
        return cls(host, validate_repository(path))

    def child(self, *segments: str) -> Repository:
        path = "/".join([self.path, *[s.strip("/") for s in segments if s.strip("/")]])
        return Repository(self.registry, validate_repository(path))

    def tag(self, tag: str) -> Reference:
        return Reference(self, tag=validate_tag(tag))

    def digest(self, digest: str) -> Reference:
        return Reference(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class Reference:
    """``repository:tag``, ``repository@digest`` or both."""

    repository: Repository
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        text = strip_scheme(text)
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            validate_digest(digest)
        tag = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash and slash != -1:
            text, tag = text[:colon], validate_tag(text[colon + 1 :])
        return cls(Repository.parse(text), tag=tag, digest=digest)

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when known, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InvalidReferenceError(f"reference {self} has neither tag nor digest")

    def __str__(self) -> str:
        out = str(self.repository)
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def strip_scheme(text: str) -> str:
    text = text.strip()
    for scheme in ("https://", "http://", "docker://"):
        if text.startswith(scheme):
            return text[len(scheme) :]
    return text
