"""RFC 8288 ``Link`` headers, as used for tag and catalog pagination."""

from __future__ import annotations

import re

_LINK_RE = re.compile(r'<(?P<target>[^>]*)>(?P<params>(?:\s*;\s*[^,;"]+(?:"[^"]*")?)*)')
_REL_RE = re.compile(r'rel\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s;,]+))', re.IGNORECASE)


def parse_next_link(header: str | None) -> str | None:
    """The target of the ``rel="next"`` link in ``header`` (relative or absolute), if any."""
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        for rel in _REL_RE.finditer(match["params"]):
            relations = (rel["quoted"] if rel["quoted"] is not None else rel["bare"]).split()
            if "next" in (r.lower() for r in relations):
                return match["target"].strip()
    return None
