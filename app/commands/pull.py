"""``d8mirror pull <bundle>`` (R-9.1): d8's pull flags, checked before Prefect starts, then
the mirror-pull flow in this process (optionally uploading the bundle in the same run)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d8mirror.errors import ConfigError
from d8mirror.names import DEFAULT_MODULES_PATH, DEFAULT_PACKAGES_PATH, PACKAGES

from .. import flags, progress_display

if TYPE_CHECKING:
    from tasks.models import PullParameters

    from ..session import Session

#: d8 pull flags of components d8mirror does not mirror yet: (flags, component, d8 type).
#: Parsed with d8's types so that using one is our clear error, not argparse's.
_UNSUPPORTED_PULL_FLAGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("--since-version",), "the platform", "str"),
    (("--include-platform",), "the platform", "str"),
    (("--deckhouse-tag",), "the platform", "str"),
    (("--installer-tag",), "the installer", "str"),
    (("-i", "--include-module"), "modules", "list"),
    (("-e", "--exclude-module"), "modules", "list"),
    (("--modules-path-suffix",), "modules", "str"),
    (("--include-plugin",), "CLI plugins", "list"),
)
#: d8 defaults of those flags: a value equal to it selects nothing and is accepted.
_UNSUPPORTED_DEFAULTS = {"installer_tag": "latest", "modules_path_suffix": DEFAULT_MODULES_PATH}

#: What a pull keeps in its working dir (``tasks.models``, ``tasks.pull``): all of it cache.
_PULL_CACHE_DIRS = ("blobs", PACKAGES, "package-versions", "archives", "state", "runs")


def register(subparsers: Any) -> None:
    pull = subparsers.add_parser("pull", help="pull packages into a bundle directory")
    pull.add_argument("bundle", help="images bundle directory")
    pull.add_argument(
        "--source",
        default="registry.deckhouse.ru/deckhouse/ee",
        help="source repository host[:port]/path",
    )
    flags.add_source_login(pull)
    filters = pull.add_mutually_exclusive_group()
    filters.add_argument(
        "--include-package",
        action="append",
        default=[],
        metavar="NAME[@CONSTRAINT]",
        help="whitelist (repeatable)",
    )
    filters.add_argument(
        "--exclude-package",
        action="append",
        default=[],
        metavar="NAME[@CONSTRAINT]",
        help="blacklist (repeatable)",
    )
    pull.add_argument("--packages-path-suffix", default=DEFAULT_PACKAGES_PATH)
    pull.add_argument("--no-packages", action="store_true")
    pull.add_argument("--only-extra-images", action="store_true")
    pull.add_argument("--skip-vex-images", action="store_true")
    pull.add_argument("--proxy-registry", action="store_true")
    pull.add_argument("--dry-run", action="store_true")
    pull.add_argument(
        "-c",
        "--images-bundle-chunk-size",
        default="0",
        help="chunk size: decimal GB (d8) or with a unit (500MB, 1GiB)",
    )
    pull.add_argument("--gost-digest", action="store_true")
    pull.add_argument("--force", action="store_true", help="allow a non-empty bundle dir")
    pull.add_argument(
        "--skip-space-check",
        action="store_true",
        help="pull even when the sized download and archives do not fit the free disk space",
    )
    pull.add_argument(
        "--upload-to",
        metavar="URL",
        help="then upload the bundle in the same run: s3://BUCKET[/PREFIX] or "
        "oci://REGISTRY/REPO:TAG (credentials: AWS chain / D8_MIRROR_REGISTRY_*)",
    )
    pull.add_argument("--upload-endpoint-url", help="S3 endpoint for --upload-to")
    pull.add_argument(
        "--delta-from",
        metavar="RECEIPT",
        help="build a delta bundle against the target's receipt: a local receipt.json (its "
        ".sha256 beside it), s3://BUCKET/KEY/receipt.json or oci://REGISTRY/REPO:TAG; blobs it "
        "lists are neither downloaded nor packed (for d8mirror push only)",
    )
    pull.add_argument("--delta-from-endpoint-url", help="S3 endpoint for --delta-from")
    pull.add_argument(
        "--delta-from-insecure",
        action="store_true",
        help="plain HTTP to the registry of an oci:// --delta-from",
    )
    pull.add_argument("--concurrency", type=int, default=4, help="packages at once")
    pull.add_argument("--blob-workers", type=int, default=4, help="blobs at once per package")
    flags.add_tls(pull)
    flags.add_work_dir(pull, "<bundle>/.tmp")
    pull.add_argument(
        "--keep-runs",
        type=int,
        default=0,
        metavar="N",
        help="with --tmp-dir: after a successful pull, keep in the cache what this run and "
        "the N runs before it referenced, remove the rest (default 0: this run's only)",
    )
    _add_d8_compat_flags(pull)
    progress_display.add_flags(pull)
    pull.set_defaults(run=run)


def _add_d8_compat_flags(pull: argparse.ArgumentParser) -> None:
    """The rest of d8's pull flags: components d8mirror skips anyway are accepted (only
    packages are mirrored), the others are parsed and refused by :func:`_refuse_unsupported`."""
    for flag in ("--no-platform", "--no-modules", "--no-security-db", "--no-installer"):
        pull.add_argument(
            flag,
            action="store_true",
            help="accepted for d8 compatibility (only packages are mirrored)",
        )
    pull.add_argument(
        "--ignore-suspend",
        action="store_true",
        help="accepted for d8 compatibility: package channels are never suspended",
    )
    pull.add_argument(
        "--no-pull-resume",
        action="store_true",
        help="start from scratch: clear the working dir's cache first",
    )
    pull.add_argument(
        "--verbose-summary",
        action="store_true",
        help="list every package with its versions in the end-of-pull summary",
    )
    for names, _component, kind in _UNSUPPORTED_PULL_FLAGS:
        if kind == "list":
            pull.add_argument(*names, action="append", default=[], help=argparse.SUPPRESS)
        else:
            pull.add_argument(*names, default=None, help=argparse.SUPPRESS)


def _refuse_unsupported(args: argparse.Namespace) -> None:
    """One ConfigError naming every given flag of a component d8mirror does not mirror."""
    given = []
    for names, component, _kind in _UNSUPPORTED_PULL_FLAGS:
        dest = names[-1].lstrip("-").replace("-", "_")
        value = getattr(args, dest)
        if value and value != _UNSUPPORTED_DEFAULTS.get(dest):
            given.append(f"{names[-1]} ({component})")
    if given:
        raise ConfigError(
            f"d8mirror mirrors Deckhouse packages only; not supported yet: "
            f"{', '.join(given)}. Drop these flags (and pull those components "
            "with d8 mirror pull)"
        )


def check_bundle_dir(
    bundle: Path, *, force: bool, dry_run: bool, tmp_dir: Path | None = None
) -> None:
    """R-9.1: a directory (created if missing), empty unless --force (a sole .tmp is fine, and
    so is the entry holding ``--tmp-dir`` when it lies inside the bundle dir)."""
    if bundle.exists() and not bundle.is_dir():
        raise ConfigError(f"images bundle path {bundle} is not a directory")
    if dry_run or force or not bundle.exists():
        return
    allowed = {".tmp"}
    if tmp_dir is not None:
        work, root = Path(os.path.abspath(tmp_dir)), Path(os.path.abspath(bundle))
        if work != root and work.is_relative_to(root):
            allowed.add(work.relative_to(root).parts[0])
    extra = sorted(p.name for p in bundle.iterdir() if p.name not in allowed)
    if extra:
        raise ConfigError(
            f"bundle directory {bundle} is not empty ({', '.join(extra[:3])}"
            f"{'…' if len(extra) > 3 else ''}); use --force to write into it"
        )


def start_without_cache(work_root: Path) -> None:
    """``--no-pull-resume``: remove what earlier pulls left in the working dir (only d8mirror's
    own directories: a --tmp-dir may hold other things)."""
    from tasks.runtime import forget_blob_store

    forget_blob_store(work_root / "blobs")
    for name in _PULL_CACHE_DIRS:
        path = work_root / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise ConfigError(
                    f"--no-pull-resume: cannot clear {path}: "
                    f"{exc.strerror or exc}; remove it by hand"
                ) from exc


def check_local_receipt(delta_from: str | None) -> None:
    """A local ``--delta-from`` receipt is verified before Prefect starts (the flow verifies
    it again, and fetches and verifies a remote one, before pulling anything). Imports no
    Prefect: the command's start-up is not delayed."""
    if delta_from is None:
        return
    from d8mirror.transfer.urls import is_remote

    if is_remote(delta_from):
        return
    from d8mirror.receipt import read_receipt

    read_receipt(Path(delta_from))


def parameters(args: argparse.Namespace) -> PullParameters:
    """The flow parameters of ``pull``, checked (ConfigError before Prefect starts); the
    credential flags are not among them (see :func:`app.flags.source_login`)."""
    _refuse_unsupported(args)
    if args.keep_runs < 0:
        raise ConfigError(f"--keep-runs must be 0 or more, not {args.keep_runs}")
    check_bundle_dir(
        Path(args.bundle),
        force=args.force,
        dry_run=args.dry_run,
        tmp_dir=Path(args.tmp_dir) if args.tmp_dir else None,
    )
    from tasks.models import PullParameters
    from tasks.transfer_models import TransferTarget

    params = PullParameters(
        bundle_dir=str(Path(args.bundle)),
        source=args.source,
        include_packages=args.include_package,
        exclude_packages=args.exclude_package,
        packages_path_suffix=args.packages_path_suffix,
        no_packages=args.no_packages,
        only_extra_images=args.only_extra_images,
        skip_vex_images=args.skip_vex_images,
        proxy_registry=args.proxy_registry,
        dry_run=args.dry_run,
        skip_space_check=args.skip_space_check,
        chunk_size=str(args.images_bundle_chunk_size),
        gost_digest=args.gost_digest,
        tmp_dir=args.tmp_dir,
        keep_runs=args.keep_runs,
        concurrency=args.concurrency,
        blob_workers=args.blob_workers,
        verbose_summary=args.verbose_summary,
        **flags.registry_access(args),
        upload=None
        if not args.upload_to
        else TransferTarget(url=args.upload_to, endpoint_url=args.upload_endpoint_url),
        delta_from=args.delta_from,
        delta_from_endpoint_url=args.delta_from_endpoint_url,
        delta_from_insecure=args.delta_from_insecure,
    )
    check_local_receipt(args.delta_from)
    params.options()  # validate filters before starting Prefect
    params.chunk_bytes()
    return params


def run(args: argparse.Namespace, session: Session) -> int:
    params = parameters(args)  # bad usage fails here, before Prefect starts
    session.give_credentials(params.repository().registry, flags.source_login(args))
    if args.no_pull_resume:
        start_without_cache(params.work_root())
    from ..warmup import warm_pull

    session.start("flows.pull", warm_up=lambda: warm_pull(params))
    from flows.pull import run_pull
    from tasks.runtime import stop_requested

    from ..signals import stop_on_signals_hook

    with session.running(graceful_stop=True), progress_display.shown(args):
        run_pull(params, on_running=[stop_on_signals_hook])  # PullFailed: told by app.main
    if stop_requested():
        print("Operation cancelled by user", file=sys.stderr)
    return 0
