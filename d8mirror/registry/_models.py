"""Small frozen value types of the registry client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from d8mirror.errors import ProtocolError

LICENSE_TOKEN_USERNAME = "license-token"


@dataclass(frozen=True)
class Credentials:
    """A username and a password (or token). ``repr`` and ``str`` never show the password."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def license_token(cls, token: str) -> Credentials:
        """Deckhouse license token: user ``license-token`` with the token as password."""
        return cls(LICENSE_TOKEN_USERNAME, token)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class TLSOptions:
    """How to reach the registry: plain HTTP, HTTPS without verification, or an extra CA."""

    insecure: bool = False
    skip_verify: bool = False
    ca_file: str | None = None


@dataclass(frozen=True)
class Descriptor:
    """What a HEAD (or GET) of a manifest tells: its media type, digest and size."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as served: ``data`` is never re-serialised."""

    media_type: str
    digest: str
    data: bytes = field(repr=False)

    def json(self) -> dict[str, Any]:
        """The manifest parsed as a JSON object (ProtocolError when it is not one)."""
        try:
            parsed = json.loads(self.data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"manifest {self.digest} is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ProtocolError(f"manifest {self.digest} is not a JSON object")
        return parsed

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))
