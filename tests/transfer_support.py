"""Helpers of the transfer tests (not a test module): a moto S3 server on 127.0.0.1 and
bundles with real archives plus a large opaque one (to exercise multipart)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from push_bundle_builder import PackageSpec, build_bundle

ACCESS_KEY = "AKIAD8MIRRORTEST"
SECRET_KEY = "sekret-d8mirror-s3"
PART = 5 * 1024 * 1024


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """A real HTTP S3 endpoint (moto) on 127.0.0.1; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def write_sidecar(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def make_bundle(tmp: Path, *, big: int = 2 * PART + 123) -> Path:
    """Two real package archives, package-versions.tar, a large tar of random bytes (a bit over
    ``big`` bytes), report.json."""
    bundle, _ = build_bundle(tmp, [PackageSpec("alpha"), PackageSpec("beta")])
    big_file = bundle / "package-big.tar"
    with tarfile.open(big_file, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("packages/big/padding.bin")
        info.size = big
        tar.addfile(info, io.BytesIO(os.urandom(big)))
    write_sidecar(big_file)
    (bundle / "report.json").write_text('{"ok": true}\n')
    return bundle


class CallCounter:
    """Counts S3 API calls per (operation, key) through botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        client.meta.events.register("provide-client-params.s3.*", self._count)

    def _count(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[(model.name, str(params.get("Key", "")).rsplit("/", 1)[-1])] += 1

    def sends(self, name: str) -> int:
        """Calls that carry bytes of ``name``: PutObject, UploadPart, CreateMultipartUpload."""
        return sum(n for (op, key), n in self.calls.items()
                   if key == name and op in ("PutObject", "UploadPart", "CreateMultipartUpload"))

    def total(self, operation: str) -> int:
        return sum(n for (op, _), n in self.calls.items() if op == operation)
