"""Bench: download one big layer with RegistryClient.fetch_blob vs skopeo, on 127.0.0.1.

    .venv/bin/python bench/blob_download.py [--size-mib 1024] [--workdir DIR]

One run: start a local registry, build an image with one pseudo-random layer of ``--size-mib``
(generated on disk in 1 MiB pieces), push it, then measure in child processes
(a) ``RegistryClient.fetch_blob`` of the layer: wall, MB/s, peak RSS;
(b) ``skopeo copy docker://HOST/repo:tag oci:DIR:tag`` of the whole image: wall, MB/s, peak RSS.
Peak RSS is each child's own VmHWM, polled from /proc every 10 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.images import BuiltImage, ImageBuilder, RandomFile
from testbed.registry_server import RegistryServer

REPO = "bench/big"
TAG = "v1.0.0"


@dataclass(frozen=True)
class Measured:
    wall: float
    max_rss_mib: float
    stdout: str


def vm_hwm_kib(pid: int) -> int | None:
    """The process's own peak RSS (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(command: list[str], poll_seconds: float = 0.01) -> Measured:
    """Run ``command``; its wall time and its peak RSS, polled from /proc (VmHWM).

    ``wait4``/``RUSAGE_CHILDREN`` are not used: on Linux they also count the memory of the
    forking Python parent before ``exec``, which hides a small child's real peak.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        peak = 0
        while process.poll() is None:
            peak = max(peak, vm_hwm_kib(process.pid) or 0)
            time.sleep(poll_seconds)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {stderr[-2000:]}")
    return Measured(wall, peak / 1024, stdout)


def build_and_push(server: RegistryServer, workdir: Path, size: int) -> BuiltImage:
    builder = ImageBuilder(workdir / "images")
    image = builder.image([{"big.bin": RandomFile(size, seed="bench-blob-download")}])
    with server.client(timeout=600.0) as client:
        for blob in image.blobs:
            if not client.blob_exists(REPO, blob.digest):
                client.upload_blob(REPO, blob.digest, blob.path, size=blob.size)
        client.put_manifest(REPO, TAG, image.manifest, image.media_type)
    return image


def fetch_child(host: str, digest: str, size: int, dest: str) -> None:
    """Runs in the child: one fetch_blob, prints its own wall time as JSON."""
    from d8mirror.registry import RegistryClient, TLSOptions

    with RegistryClient(host, tls=TLSOptions(insecure=True), timeout=600.0) as client:
        started = time.perf_counter()
        client.fetch_blob(REPO, digest, Path(dest), size=size)
        print(json.dumps({"seconds": time.perf_counter() - started}))


def bench(size_mib: int, workdir: Path) -> None:
    size = size_mib << 20
    with RegistryServer(workdir / "registry") as server:
        started = time.perf_counter()
        image = build_and_push(server, workdir, size)
        layer = image.blobs[-1]
        print(
            f"seeded {layer.size / 2**20:.0f} MiB layer in "
            f"{time.perf_counter() - started:.1f} s on {server.host}"
        )
        total = sum(blob.size for blob in image.blobs) + image.size

        dest = workdir / "fetched.blob"
        ours = run_measured(
            [
                sys.executable,
                __file__,
                "--fetch-child",
                server.host,
                layer.digest,
                str(layer.size),
                str(dest),
            ]
        )
        inner = json.loads(ours.stdout.strip().splitlines()[-1])["seconds"]
        dest.unlink()

        oci_dir = workdir / "skopeo-oci"
        skopeo = run_measured(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                f"docker://{server.host}/{REPO}:{TAG}",
                f"oci:{oci_dir}:{TAG}",
            ]
        )
        shutil.rmtree(oci_dir, ignore_errors=True)

    mib = 2**20
    print(f"{'tool':<34} {'wall s':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
    print(
        f"{'fetch_blob (in-process timer)':<34} {inner:8.2f} {layer.size / mib / inner:8.1f}"
        f" {'':>13}"
    )
    print(
        f"{'fetch_blob (child process wall)':<34} {ours.wall:8.2f} "
        f"{layer.size / mib / ours.wall:8.1f} {ours.max_rss_mib:13.1f}"
    )
    print(
        f"{'skopeo copy -> oci: (whole image)':<34} {skopeo.wall:8.2f} "
        f"{total / mib / skopeo.wall:8.1f} {skopeo.max_rss_mib:13.1f}"
    )
    print(
        f"ratio wall fetch_blob/skopeo = {inner / skopeo.wall:.2f} (in-process timer), "
        f"{ours.wall / skopeo.wall:.2f} (child wall, incl. interpreter start); "
        f"peak RSS ratio = {ours.max_rss_mib / skopeo.max_rss_mib:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the registry, image and downloads live (default: temp)",
    )
    parser.add_argument(
        "--fetch-child", nargs=4, metavar=("HOST", "DIGEST", "SIZE", "DEST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.fetch_child:
        host, digest, size, dest = args.fetch_child
        fetch_child(host, digest, int(size), dest)
        return 0
    if shutil.which("skopeo") is None:
        print("skopeo is not installed", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="d8mirror-bench-"))
    try:
        bench(args.size_mib, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
