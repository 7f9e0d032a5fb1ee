"""The main job end to end on embedded defaults: ``python -m app.demo``.

Starts a local source registry on 127.0.0.1 with Deckhouse-shaped demo packages, pulls them
into ``<out>/bundle`` with ``d8mirror pull``, starts a second (air-gapped) registry and pushes
the bundle into it with ``d8mirror push``, then checks that every pulled tag resolves to the
same digest in the target. Prefect runs on its embedded SQLite backend with telemetry off.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from d8mirror.bundle import bundle_stats, verify_sidecars
from d8mirror.mediatypes import INDEX_TYPES
from d8mirror.names import DEFAULT_PACKAGES_PATH
from d8mirror.registry import RegistryClient
from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent, demo_spec, seed_packages

from .main import build_parser, prepare_process
from .main import run as run_command
from .session import Session

ROOT = "deckhouse/ee"


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _expected_digest(client: RegistryClient, repo: str, digest: str) -> str:
    """What the bundle holds for ``repo@digest``: multi-arch indexes are stored as their
    linux/amd64 image, as ``d8 mirror`` does (R-6.3)."""
    manifest = client.get_manifest(repo, digest)
    if manifest.media_type not in INDEX_TYPES:
        return digest
    children = manifest.json()["manifests"]
    amd64 = [c for c in children if (c.get("platform") or {}).get("architecture") == "amd64"]
    return str((amd64 or children)[0]["digest"])


def _compare(content: SeededContent, source: RegistryServer, target: RegistryServer) -> list[str]:
    """Pulled tags whose digest in the target differs from the source's."""
    problems = []
    with source.client() as src, target.client() as dst:
        for ref, digest in content.refs.items():
            repo, _, tag = ref.rpartition(":")
            if "@" in ref or not repo.startswith(f"{ROOT}{DEFAULT_PACKAGES_PATH}/"):
                continue
            if tag in set(dst.list_tags(repo)) and (
                dst.head_manifest(repo, tag).digest != _expected_digest(src, repo, digest)
            ):
                problems.append(ref)
    return problems


def run(out: Path) -> int:
    with Session() as session:  # one Prefect API server for the pull and the push
        return _run(out, session)


def _run(out: Path, session: Session) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bundle = out / "bundle"
    started = time.monotonic()
    with (
        RegistryServer(out / "source-registry") as source,
        RegistryServer(out / "airgap-registry") as target,
    ):
        _step(f"seeding demo packages into {source.host}/{ROOT}")
        with source.client() as client:
            content = seed_packages(client, ROOT, demo_spec(), out / "images")
        print(f"{len(content.refs)} references in {len(content.repositories)} repositories")

        _step(f"d8mirror pull {bundle} --source {source.host}/{ROOT} --insecure")
        code = run_command(
            build_parser().parse_args(
                ["pull", str(bundle), "--source", f"{source.host}/{ROOT}", "--insecure"]
            ),
            session,
        )
        if code:
            return code
        for stat in bundle_stats(bundle):
            print(f"  {stat.name:<28} {stat.size:>12,} bytes")
        problems = verify_sidecars(bundle)
        print(
            "checksums: "
            + ("all archives match their .sha256 sidecars" if not problems else "; ".join(problems))
        )

        _step(f"d8mirror push {bundle} {target.host}/{ROOT} --insecure")
        code = run_command(
            build_parser().parse_args(["push", str(bundle), f"{target.host}/{ROOT}", "--insecure"]),
            session,
        )
        if code:
            return code
        mismatched = _compare(content, source, target)
        if mismatched or problems:
            print(f"target differs from source for: {', '.join(mismatched)}", file=sys.stderr)
            return 1
    print(
        f"\nDone in {time.monotonic() - started:.1f} s: every pulled tag resolves to the same "
        f"digest in the air-gapped registry. Bundle: {bundle}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="working directory (recreated)"
    )
    args = parser.parse_args(argv)
    prepare_process()
    return run(args.out)


if __name__ == "__main__":
    sys.exit(main())
