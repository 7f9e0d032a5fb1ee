"""Bench: bundle transfer through S3 (moto) and an OCI registry, vs boto3 defaults, on 127.0.0.1.

    .venv/bin/python bench/transfer.py [--size-mib 2048] [--workdir DIR]

One run. A bundle of one ``--size-mib`` archive (random bytes, with its .sha256 sidecar) is
moved by each contender in its own child process (wall time by an in-process timer, peak RSS
as the child's own VmHWM polled from /proc):

* S3 up:   d8mirror's upload steps, as the upload-bundle flow's tasks run them (hash for the
           manifest, ``s3.upload_file`` with 64 MiB parts x4 and HEAD verify, manifest read
           back) vs boto3 ``upload_file`` with the default TransferConfig;
* S3 down: the download-bundle steps (manifest, HEAD all, ``s3.download_file``: one streamed
           GET per file with Range resume, hashed as it lands, local manifest last) vs boto3
           ``download_file`` with the default config;
* OCI up/down: the same steps through ``oci_artifact`` against the local docker-registry
           (64 MiB chunks).

The steps run in one process without Prefect (the flows add a task run per file around them).

Measured once (2 GiB, this 2-core host): ours-s3-up 88.3 s / boto3-up 42.5 s (time ratio 2.08,
peak RSS 79 vs 98 MiB); ours-s3-down 9.6 s / boto3-down 430 s (moto serves each ranged GET of a
2 GiB object very slowly, so boto3's parallel ranges suffer: a moto artefact, not S3's); OCI up
13.2 s at 58 MiB, down 9.4 s at 61 MiB. Upload with 64 MiB parts is slower on moto than boto3's
8 MiB x10 default; tune ``part_size``/``concurrency`` against the real store.

moto runs as its own process (``python -m moto.server``), so its memory is not counted.
Needs about 4x the size of free disk in the temp dir and as much free RAM for moto.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from blob_download import Measured, run_measured

from testbed.registry_server import RegistryServer, free_port

BUCKET = "bench"
KEY_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAD8MIRRORBENCH",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def make_bundle(root: Path, size: int) -> Path:
    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    path = bundle / "package-big.tar"
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, 16 << 20))
            hasher.update(piece)
            out.write(piece)
            left -= len(piece)
    (bundle / "package-big.tar.sha256").write_text(f"{hasher.hexdigest()}  {path.name}\n")
    return bundle


# -- children ------------------------------------------------------------------------------------
def child(op: str, endpoint: str, bundle: str, dest: str) -> None:
    from d8mirror.transfer import OciUrl, S3Url, build_manifest, oci_artifact, s3
    from d8mirror.transfer.manifest import MANIFEST_NAME, write_local_manifest

    out: dict[str, Any] = {}
    started = time.perf_counter()
    if "oci" not in op:
        settings = s3.S3Settings(endpoint_url=endpoint)
        client = s3.make_client(settings)
    if op == "ours-s3-up":
        manifest = build_manifest(Path(bundle))
        out["hash_seconds"] = time.perf_counter() - started
        for entry in manifest.files:
            s3.upload_file(
                client, S3Url(BUCKET, "ours"), Path(bundle) / entry.name, entry, settings
            )
        s3.put_manifest(client, S3Url(BUCKET, "ours"), manifest)
    elif op == "boto3-up":
        for path in sorted(Path(bundle).iterdir()):
            client.upload_file(str(path), BUCKET, f"default/{path.name}")
    elif op == "ours-s3-down":
        s3_url = S3Url(BUCKET, "ours")
        manifest = s3.read_manifest(client, s3_url)
        s3.check_complete(client, s3_url, manifest)
        Path(dest).mkdir(parents=True, exist_ok=True)
        for entry in manifest.files:
            s3.download_file(client, s3_url, entry, Path(dest))
        write_local_manifest(Path(dest), manifest)
    elif op == "boto3-down":
        Path(dest).mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(bundle).iterdir()):
            client.download_file(BUCKET, f"default/{path.name}", str(Path(dest) / path.name))
    elif op in ("ours-oci-up", "ours-oci-down"):
        from d8mirror.registry import RegistryClient, TLSOptions

        host = endpoint
        url = OciUrl(host, "bench/bundle", "v1")
        with RegistryClient(host, tls=TLSOptions(insecure=True), timeout=600.0) as registry:
            if op == "ours-oci-up":
                manifest = build_manifest(Path(bundle))
                for entry in manifest.files:
                    oci_artifact.upload_file(registry, url, Path(bundle) / entry.name, entry)
                oci_artifact.commit(registry, url, manifest)
            else:
                manifest = oci_artifact.read_artifact(registry, url)
                Path(dest).mkdir(parents=True, exist_ok=True)
                for entry in manifest.files:
                    oci_artifact.download_file(registry, url, entry, Path(dest))
                write_local_manifest(Path(dest), manifest)
    else:
        raise SystemExit(f"unknown op {op}")
    out["seconds"] = time.perf_counter() - started
    if op.endswith("-down") and op.startswith("ours"):
        assert (Path(dest) / MANIFEST_NAME).is_file()
    print(json.dumps(out))


# -- parent --------------------------------------------------------------------------------------
def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("moto server did not start")


def measure(op: str, endpoint: str, bundle: Path, dest: Path) -> tuple[Measured, dict[str, Any]]:
    env_command = [sys.executable, __file__, "--child", op, endpoint, str(bundle), str(dest)]
    measured = run_measured(env_command)
    inner = json.loads(measured.stdout.strip().splitlines()[-1])
    shutil.rmtree(dest, ignore_errors=True)
    return measured, inner


def bench(size_mib: int, workdir: Path) -> None:
    size = size_mib << 20
    os.environ.update(KEY_ENV)
    bundle = make_bundle(workdir, size)
    moto, endpoint = start_moto()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        rows: dict[str, tuple[Measured, dict[str, Any]]] = {}
        for op in ("ours-s3-up", "boto3-up", "ours-s3-down", "boto3-down"):
            rows[op] = measure(op, endpoint, bundle, workdir / f"dest-{op}")
        with RegistryServer(workdir / "registry") as registry:
            for op in ("ours-oci-up", "ours-oci-down"):
                rows[op] = measure(op, registry.host, bundle, workdir / f"dest-{op}")
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    mib = 1 << 20
    print(f"bundle: one {size_mib} MiB archive + sidecar; moto {endpoint}")
    print(f"{'operation':<16} {'wall s':>8} {'MiB/s':>8} {'peak RSS MiB':>13}  notes")
    for op, (measured, inner) in rows.items():
        note = (
            f"hash pass {inner['hash_seconds']:.2f} s included" if "hash_seconds" in inner else ""
        )
        print(
            f"{op:<16} {inner['seconds']:8.2f} {size / mib / inner['seconds']:8.1f} "
            f"{measured.max_rss_mib:13.1f}  {note}"
        )

    def ratio(a: str, b: str) -> str:
        return (
            f"time {rows[a][1]['seconds'] / rows[b][1]['seconds']:.2f}, "
            f"peak RSS {rows[a][0].max_rss_mib / rows[b][0].max_rss_mib:.2f}"
        )

    print(f"ratio ours/boto3 upload:   {ratio('ours-s3-up', 'boto3-up')}")
    print(f"ratio ours/boto3 download: {ratio('ours-s3-down', 'boto3-down')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="d8mirror-bench-transfer-"))
    try:
        bench(args.size_mib, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
