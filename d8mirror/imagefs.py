"""Files read from inside images (R-1.3, R-5) and the parsers of those files.

Layers are tar blobs on disk (gzip, zstd or plain), always streamed (``tarfile`` mode ``r|``), never
loaded whole. Two lookup semantics, as in the reference:

* ``top_first_any=True`` (``extra_images.json``): scan layers from the top; the first regular
  file whose cleaned path equals the name wins.
* ``top_first_any=False`` (``version.json``, ``images_digests.json``): the flattened filesystem.
  The topmost layer holding the file wins; an OCI whiteout in a higher layer — ``.wh.<name>``
  next to the file, ``.wh.<dir>`` for an ancestor directory, or ``.wh..wh..opq`` in the file's
  directory or an ancestor — hides every lower layer. Whiteouts never hide a file of their own
  layer (OCI image spec).

A truncated or corrupt layer raises :class:`~d8mirror.errors.LayerReadError`; it is never
reported as "absent". Files larger than :data:`MAX_IMAGE_FILE_BYTES` are refused.
"""

from __future__ import annotations

import gzip
import json
import math
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from d8mirror.errors import InvalidImageMetadataError, LayerReadError
from d8mirror.reference import is_valid_component, is_valid_tag

MAX_IMAGE_FILE_BYTES = 1024 * 1024
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_TAR_BLOCK = 512
_DIGEST_RE = re.compile(rb"sha256:[a-f0-9]{64}")
_LAYER_ERRORS = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    OSError,
    zstandard.ZstdError,
)


def clean_path(name: str) -> str:
    """A tar entry name as a relative path: ``./x`` → ``x``, ``/a//b/`` → ``a/b``;
    a name escaping the root (``../x``) becomes ``""`` (never matches)."""
    cleaned = posixpath.normpath(name.lstrip("/"))
    if cleaned in (".", "..") or cleaned.startswith("../"):
        return ""
    return cleaned


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` → ``["", "a", "a/b"]`` (directories containing the path, root first)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(len(parts) + 1)]


@dataclass(frozen=True)
class _Hider:
    """The whiteout entry names that, in a higher layer, hide ``target``."""

    names: frozenset[str]

    @classmethod
    def of(cls, target: str) -> _Hider:
        names: set[str] = set()
        for directory in _ancestors(target):
            names.add(posixpath.join(directory, OPAQUE_WHITEOUT))
        components = target.split("/")
        for i, component in enumerate(components):
            parent = "/".join(components[:i])
            names.add(posixpath.join(parent, WHITEOUT_PREFIX + component))
        return cls(frozenset(names))


class _ZstdStream:
    """A zstd layer's decompressed bytes, counted (a cut-off zstd stream just ends early, so
    completeness is checked on the tar inside, as for a plain layer)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        self.count += len(data)
        return data

    def close(self) -> None:
        self._reader.close()  # type: ignore[no-untyped-call]  # zstandard's stub


_Stream = gzip.GzipFile | BinaryIO | _ZstdStream


@contextmanager
def _open_layer(path: Path) -> Iterator[tuple[tarfile.TarFile, _Stream, str]]:
    """The layer as a streaming tar, its (decompressed) stream and its compression
    (``gzip``, ``zstd`` or ``plain``), told by the first bytes as go-containerregistry does."""
    with path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        stream: _Stream
        if magic.startswith(_ZSTD_MAGIC):
            stream, kind = _ZstdStream(raw), "zstd"
        elif magic.startswith(_GZIP_MAGIC):
            stream, kind = gzip.GzipFile(fileobj=raw), "gzip"
        else:
            stream, kind = raw, "plain"
        with closing(stream), tarfile.open(fileobj=cast(BinaryIO, stream), mode="r|") as tar:
            yield tar, stream, kind


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, layer: Path) -> bytes:
    if member.size > MAX_IMAGE_FILE_BYTES:
        raise InvalidImageMetadataError(
            f"{member.name} in layer {layer} is {member.size} bytes, more than the "
            f"{MAX_IMAGE_FILE_BYTES}-byte limit for image metadata files"
        )
    handle = tar.extractfile(member)
    data = handle.read() if handle is not None else b""
    if len(data) != member.size:
        raise LayerReadError(f"layer {layer} is truncated inside {member.name}")
    return data


def _finish(tar: tarfile.TarFile, stream: _Stream, kind: str, layer: Path) -> None:
    """After a full scan: make sure the layer was complete (not silently cut short)."""
    if kind == "gzip":
        while stream.read(1024 * 1024):  # drain: checks the gzip trailer (CRC and length)
            pass
        return
    if isinstance(stream, _ZstdStream):
        while stream.read(1024 * 1024):
            pass
        size = stream.count
    else:
        size = layer.stat().st_size
    if size - tar.offset < 2 * _TAR_BLOCK:  # the end-of-archive marker is two zero blocks
        raise LayerReadError(f"layer {layer} is truncated: the tar has no end-of-archive marker")


def _scan_layer(layer: Path, target: str, hider: _Hider) -> tuple[bytes | None, bool]:
    """(content of ``target`` if this layer has it, whether this layer hides lower ones)."""
    hidden = False
    with _open_layer(layer) as (tar, stream, kind):
        for member in tar:
            name = clean_path(member.name)
            if name == target and member.isreg():
                return _read_member(tar, member, layer), hidden
            # a whiteout, or anything else (a directory, a link) put in the file's place
            hidden = hidden or name in hider.names or name == target
        _finish(tar, stream, kind, layer)
    return None, hidden


def read_file_from_layers(
    layer_paths: Sequence[Path], name: str, *, top_first_any: bool
) -> bytes | None:
    """Content of file ``name`` from layers given bottom → top, or None when absent.

    See the module docstring for the two semantics. Raises LayerReadError for an unreadable
    layer and InvalidImageMetadataError for a file over the size cap.
    """
    target = clean_path(name)
    hider = _Hider.of(target)
    for layer in reversed(layer_paths):
        try:
            content, hidden = _scan_layer(layer, target, hider)
        except _LAYER_ERRORS as exc:
            raise LayerReadError(
                f"cannot read layer {layer} while looking for {name}: {exc}; the blob is "
                "truncated or corrupt — delete it from the blob store and pull again"
            ) from exc
        if content is not None:
            return content
        if hidden and not top_first_any:
            return None
    return None


# -- parsers -------------------------------------------------------------------------------------
_JSON_SPACE = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _first_json_value(data: bytes, what: str) -> Any:
    """The first JSON value of ``data``, as Go's ``json.NewDecoder(r).Decode`` reads it: leading
    whitespace skipped, anything after the value ignored, invalid UTF-8 inside strings
    replaced. Raises InvalidImageMetadataError naming ``what``."""
    text = data.decode("utf-8", errors="replace").lstrip(_JSON_SPACE)
    try:
        return _DECODER.raw_decode(text)[0]
    except (ValueError, RecursionError) as exc:
        raise InvalidImageMetadataError(f"{what} is not valid JSON: {exc}") from exc


def parse_version_json(data: bytes) -> str | None:
    """``{"version": "1.2.3"}`` → ``"v1.2.3"``; None when the version is missing, null or empty
    (Go decodes those as ``""``: the channel contributes nothing).

    A file that is not a JSON object, a ``version`` that is not a string, or one that cannot
    be a tag raises InvalidImageMetadataError (the caller reports it as a warning).
    """
    doc = _first_json_value(data, "version.json")
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InvalidImageMetadataError(
            f'version.json is a JSON {_json_type(doc)}, not an object with a "version"'
        )
    version = doc.get("version")
    if version is None or version == "":
        return None
    if not isinstance(version, str):
        raise InvalidImageMetadataError(
            f'version.json: "version" is a JSON {_json_type(version)} '
            f"({json.dumps(version)[:60]}), not a string"
        )
    tag = version if version.startswith("v") else f"v{version}"
    if not is_valid_tag(tag):
        raise InvalidImageMetadataError(
            f"version.json: version {version[:140]!r} is not a valid tag (up to 128 letters, "
            "digits, '_', '.', '-')"
        )
    return tag


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _render_tag(value: object) -> str | None:
    """A JSON string as is; a number as Go's ``fmt.Sprintf("%.0f", float64)`` renders it
    (round half to even: ``2.5`` → ``"2"``); other types: None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):  # Go: "cannot unmarshal number ... into float64"
        raise InvalidImageMetadataError(
            f"extra_images.json: number {str(value)[:40]} is out of range"
        )
    return f"{number:.0f}"


def parse_extra_images_json(data: bytes) -> dict[str, str]:
    """``{"<extra-name>": <tag>}`` → name → tag, in file order (R-1.3, Q16).

    Read as Go reads it: the first JSON value (trailing data ignored); ``null`` means no
    extras; numbers become integer tags as ``%.0f`` renders them (``3.7`` → ``"4"``,
    ``2.5`` → ``"2"``); bool, null, objects and arrays as values are ignored. A malformed
    file, a name that is not one path component or an invalid tag raises
    InvalidImageMetadataError naming the entry.
    """
    doc = _first_json_value(data, "extra_images.json")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidImageMetadataError("extra_images.json is not a JSON object of name: tag")
    out: dict[str, str] = {}
    for name, value in doc.items():
        tag = _render_tag(value)
        if tag is None:
            continue
        if not is_valid_component(name):
            raise InvalidImageMetadataError(
                f"extra_images.json entry {name[:140]!r}: not a valid image name (lowercase "
                "letters, digits and . _ - separators, one path component); the image is broken "
                "upstream — exclude this version or ask its publisher to fix it"
            )
        if not is_valid_tag(tag):
            raise InvalidImageMetadataError(
                f"extra_images.json entry {name!r}: invalid tag {tag[:140]!r} (up to 128 "
                "letters, digits, '_', '.', '-', not starting with '.' or '-')"
            )
        out[name] = tag
    return out


def images_digests_problem(data: bytes) -> str | None:
    """Why ``images_digests.json`` is not the JSON object it should be (None when it is).

    The digests are still taken from its text, as the reference does (a regex over the file),
    so this only explains a warning (Q11)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is not valid JSON ({str(exc)[:80]})"
    if not isinstance(doc, dict):
        return f"is a JSON {_json_type(doc)}, not an object"
    return None


def parse_images_digests(data: bytes) -> list[str]:
    """Every ``sha256:<64 hex>`` substring, de-duplicated, first-seen order (structure ignored)."""
    return list(dict.fromkeys(m.decode("ascii") for m in _DIGEST_RE.findall(data)))
