"""Archive checksums: SHA-256 always, GOST R 34.11-2012 Streebog-256 on request (R-7.6).

Sidecars sit beside every archive or chunk:

* ``<file>.sha256``  — ``sha256sum`` format, ``"<hex>  <file name>\\n"`` (``sha256sum -c`` works);
* ``<file>.gostsum`` — 64 lowercase hex chars, no newline, no file name (as d8 writes it), for
  every ``.tar``/``.chunk`` of the bundle dir once a pull fully succeeded
  (:func:`write_gost_sidecars`, R-7.6).

Digests are fed piece by piece while an archive is written, so nothing is read twice: the GOST
digest computed while packing travels with the archive's result (:class:`KnownDigest`) to
the end of the pull, where its sidecar is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import gostcrypto

from d8mirror.errors import BundleError, ConfigError
from d8mirror.files import Staging, staging_path, write_atomic
from d8mirror.hashing import sha256_file_hex
from d8mirror.names import (
    ARCHIVE_FILE_SUFFIXES,
    gost_sidecar,
    sha256_sidecar,
)

PIECE = 1024 * 1024
#: Archives hashed at once against their sidecars (hashlib releases the GIL: one per core here).
SIDECAR_WORKERS = 2
GOST_PROGRAM = "gost12sum"
GOST_BACKEND_ENV = "D8MIRROR_GOST_BACKEND"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


_GOST_BLOCK = 64


class _GostHasher:
    """Incremental Streebog-256 that feeds ``gostcrypto`` whole 64-byte blocks only.

    ``gostcrypto`` 1.2.5 returns wrong digests when ``update`` is called with a piece whose
    length is not a multiple of 64 bytes (except the last one), so the remainder is carried over.
    """

    def __init__(self) -> None:
        self._hash = cast(Hasher, gostcrypto.gosthash.new("streebog256"))
        self._carry = b""

    def update(self, data: bytes, /) -> None:
        data = self._carry + bytes(data) if self._carry else bytes(data)
        aligned = len(data) - len(data) % _GOST_BLOCK
        if aligned:
            self._hash.update(data[:aligned])
        self._carry = data[aligned:]

    def hexdigest(self) -> str:
        if self._carry:
            self._hash.update(self._carry)
            self._carry = b""
        return self._hash.hexdigest().lower()


#: Variables a hashing child never needs: credentials (d8's and the AWS chain's).
_SECRET_PREFIXES = ("D8_MIRROR_", "AWS_")


def _child_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SECRET_PREFIXES)}


class _GostPipeHasher:
    """Streebog-256 computed by ``gost12sum`` (Debian package ``gostsum``) fed through a pipe.

    About 100 MiB/s against 0.15 MiB/s for pure-Python ``gostcrypto``; the hashing also runs on
    another CPU core while the archive is written.
    """

    def __init__(self, program: str) -> None:
        self._program = program
        self._process = subprocess.Popen(
            [program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_environment(),
        )

    def update(self, data: bytes, /) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(data)

    def hexdigest(self) -> str:
        output, _ = self._process.communicate()
        digest = output.split(b" ", 1)[0].decode("ascii", "replace").strip().lower()
        if self._process.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleError(
                f"{self._program} failed (exit {self._process.returncode}); "
                f"set {GOST_BACKEND_ENV}=gostcrypto to hash in Python instead"
            )
        return digest

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


def gost_backend() -> str:
    """``gost12sum`` if installed (``$D8MIRROR_GOST_BACKEND`` overrides), else ``gostcrypto``."""
    wanted = os.environ.get(GOST_BACKEND_ENV, "")
    if wanted == "gostcrypto":
        return wanted
    program = shutil.which(wanted or GOST_PROGRAM)
    if program is None and wanted:
        raise ConfigError(
            f"{GOST_BACKEND_ENV}={wanted!r} is not an installed program; install "
            "the gostsum package or use gostcrypto"
        )
    return program or "gostcrypto"


def new_gost() -> Hasher:
    """A fresh incremental Streebog-256 hasher (any piece sizes)."""
    backend = gost_backend()
    return _GostHasher() if backend == "gostcrypto" else _GostPipeHasher(backend)


def close_hasher(hasher: Hasher | None) -> None:
    """Release a hasher that will not be finished (stops a ``gost12sum`` process)."""
    if isinstance(hasher, _GostPipeHasher):
        hasher.close()


class FileDigests:
    """SHA-256 (and optionally Streebog-256) of one file, updated as its bytes are written."""

    def __init__(self, *, gost: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.gost = new_gost() if gost else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        if self.gost is not None:
            self.gost.update(bytes(data))  # copies; GOST is far slower than the copy

    def discard(self) -> None:
        close_hasher(self.gost)


def _hash_file(path: Path, hasher: Hasher) -> str:
    try:
        with path.open("rb") as stream:
            while piece := stream.read(PIECE):
                hasher.update(piece)
    except BaseException:
        close_hasher(hasher)
        raise
    return hasher.hexdigest()


def gost_hex_file(path: Path) -> str:
    """Lowercase hex Streebog-256 of a file, streamed."""
    return _hash_file(path, new_gost())


def sha256_line(hex_digest: str, file_name: str) -> str:
    """One ``sha256sum`` line."""
    return f"{hex_digest}  {file_name}\n"


def stage_sidecars(final: Path, digests: FileDigests, staging: Staging) -> None:
    """Write the ``.sha256`` sidecar of ``final`` under a staging name and register it with
    ``staging`` (the ``.gostsum`` comes at the end of the pull: :func:`write_gost_sidecars`)."""
    sidecar = sha256_sidecar(final)
    tmp = staging_path(sidecar)
    staging.add(tmp, sidecar)
    tmp.write_text(sha256_line(digests.sha256.hexdigest(), final.name), encoding="ascii")
    tmp.chmod(0o644)


@dataclass(frozen=True)
class KnownDigest:
    """A GOST digest computed while a file was written, valid while the file is unchanged
    (same device, inode, size and modification time; a hard link shares them)."""

    identity: tuple[int, ...]
    hex: str

    @classmethod
    def of(cls, path: Path, hex_digest: str) -> KnownDigest:
        return cls(identity=_identity_of(path), hex=hex_digest)

    def fits(self, path: Path) -> bool:
        return self.identity == _identity_of(path)


def _identity_of(path: Path) -> tuple[int, ...]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _write_gost_sidecar(path: Path, known: KnownDigest | None) -> None:
    digest = known.hex if known is not None and known.fits(path) else gost_hex_file(path)
    write_atomic(gost_sidecar(path), digest.encode("ascii"))  # unique temp, 0644


def write_gost_sidecars(
    bundle_dir: Path, archive: str | None = None, known: Mapping[str, KnownDigest] | None = None
) -> list[Path]:
    """d8's end of a successful ``--gost-digest`` pull (R-7.6): ``<file>.gostsum`` for every
    ``.tar``/``.chunk`` file of ``bundle_dir``, its own or not (or only those of the archive
    named ``archive``); the digests in ``known`` (by file name, computed while packing) are
    used for files still unchanged, the others computed. Returns the files; raises on the
    first failure."""
    from .chunks import existing_chunks

    if archive is not None:
        path = bundle_dir / archive
        files = [path] if path.is_file() else existing_chunks(path)
    else:
        files = sorted(p for p in bundle_dir.iterdir() if _is_archive_file(p))
    with ThreadPoolExecutor(
        max_workers=SIDECAR_WORKERS, thread_name_prefix="d8mirror-gost"
    ) as pool:
        for future in [
            pool.submit(_write_gost_sidecar, f, (known or {}).get(f.name)) for f in files
        ]:
            future.result()
    return files


def _is_archive_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_FILE_SUFFIXES)


def has_sha256_sidecars(bundle_dir: Path) -> bool:
    """Whether any archive file in ``bundle_dir`` has a ``.sha256`` sidecar (d8 writes none)."""
    return any(_is_archive_file(p) and sha256_sidecar(p).is_file() for p in bundle_dir.iterdir())


def verify_sidecars(bundle_dir: Path) -> list[str]:
    """Problems with the sidecars of every ``.tar``/``.chunk`` file in ``bundle_dir`` (empty = OK).

    A wrong ``.sha256`` is a problem, and so is a missing one beside files that have theirs (a
    bundle written by d8 has none at all: no problem); a ``.gostsum`` is checked when present.
    """
    problems: list[str] = []
    required = has_sha256_sidecars(bundle_dir)
    for path in sorted(p for p in bundle_dir.iterdir() if _is_archive_file(p)):
        if required or sha256_sidecar(path).is_file():
            problems += _sha256_problems(path)
        problems += _gost_problems(path)
    return problems


def _sidecar_hex(text: str) -> str:
    """The digest of a ``sha256sum`` line; the file name after it is not compared, so an
    archive renamed with its sidecar still verifies (d8's "rename archives freely")."""
    return (text.split(maxsplit=1) or [""])[0].lower()


def _sha256_problems(path: Path) -> list[str]:
    sidecar = sha256_sidecar(path)
    if not sidecar.is_file():
        return [f"{path}: missing checksum file {sidecar.name}"]
    expected = _sidecar_hex(sidecar.read_text(encoding="utf-8", errors="replace"))
    actual = sha256_file_hex(path)
    if expected != actual:
        return [
            f"{path}: SHA-256 does not match {sidecar.name}; the file is corrupt or was "
            "modified, copy it again"
        ]
    return []


def _gost_problems(path: Path) -> list[str]:
    sidecar = gost_sidecar(path)
    if not sidecar.is_file():
        return []
    expected = sidecar.read_text(encoding="utf-8", errors="replace").strip().lower()
    if expected != gost_hex_file(path):
        return [
            f"{path}: GOST digest does not match {sidecar.name}; the file is corrupt or was "
            "modified, copy it again"
        ]
    return []


def check_archive_sidecars(archive: Path, checked: CheckedFiles | None = None) -> list[str]:
    """Problems of the archive ``archive`` (``<x>.tar``: the tar or its chunk set) against the
    ``.sha256`` sidecars that are present. A missing sidecar is no problem here: bundles written
    by ``d8 mirror`` have none. Used before a push so a corrupt copy fails loudly. With
    ``checked``, a file already found to match (and unchanged since) is not hashed again."""
    from .chunks import existing_chunks

    files = [archive] if archive.is_file() else existing_chunks(archive)
    memo = checked or CheckedFiles()
    return [
        problem
        for path in files
        if sha256_sidecar(path).is_file()
        for problem in memo.sha256_problems(path)
    ]


class CheckedFiles:
    """Files found to match their ``.sha256`` sidecar, by identity (device, inode, size and
    mtime of the file and of its sidecar), so one owner hashes each file once while neither
    changes. The caller owns it (the Prefect layer keeps one per process). Thread-safe."""

    def __init__(self) -> None:
        self._matched: set[tuple[int, ...]] = set()
        self._lock = threading.Lock()

    def sha256_problems(self, path: Path) -> list[str]:
        """:func:`_sha256_problems`, skipped for a file that matched before, unchanged."""
        identity = _identity(path)
        with self._lock:
            if identity in self._matched:
                return []
        problems = _sha256_problems(path)
        if not problems and _identity(path) == identity:
            with self._lock:
                self._matched.add(identity)
        return problems


def _identity(path: Path) -> tuple[int, ...]:
    """The file and its sidecar as they are now: device, inode, size and mtime of both."""
    sidecar = sha256_sidecar(path)
    return tuple(
        value
        for stat in (path.stat(), sidecar.stat())
        for value in (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    )
