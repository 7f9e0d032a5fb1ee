"""``d8mirror``: d8-compatible command line; runs the Prefect flows in this process.

Prefect is imported only inside the commands, so ``import d8mirror`` stays Prefect-free.
Exit codes (spec §9.5): 0 success, graceful cancel (Ctrl+C, SIGTERM) or dry-run; 1 any error,
bad usage included (as d8, whose cobra exits 1 for usage errors too).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from d8mirror.cli_warmup import finish_warm_up, start_warm_up
from d8mirror.errors import ConfigError, MirrorError
from d8mirror.memory import limit_malloc_arenas

if TYPE_CHECKING:
    from tasks.models import PullParameters

#: Modules that add subcommands: each has ``register(subparsers)`` and sets ``handler``.
_COMMAND_MODULES: tuple[str, ...] = ("flows.push_command", "d8mirror.cli_transfer",
                                     "flows.setup_command")

#: Commands that run a flow, and its module: the local Prefect API server is started before
#: the module (and Prefect) is imported, and boots while it loads.
_FLOW_MODULES = {"pull": "flows.pull", "push": "flows.push", "upload": "flows.transfer",
                 "download": "flows.transfer"}

#: Defaults for an air-gapped tool: no telemetry, patience for a busy 2-core host.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "INFO",
}


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _add_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="use plain HTTP to the registry")
    parser.add_argument("--tls-skip-verify", action="store_true",
                        help="do not verify the registry's TLS certificate")
    parser.add_argument("--ca-file", default=_env("SSL_CERT_FILE"),
                        help="extra CA bundle (PEM) to trust (default: $SSL_CERT_FILE)")
    parser.add_argument("--tmp-dir", help="working directory (default: <bundle>/.tmp)")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 1 on bad usage, as d8 does (argparse's own code is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


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
_UNSUPPORTED_DEFAULTS = {"installer_tag": "latest", "modules_path_suffix": "/modules"}


def _add_d8_compat_flags(pull: argparse.ArgumentParser) -> None:
    """The rest of d8's pull flags: components d8mirror skips anyway are accepted (only
    packages are mirrored), the others are parsed and refused by :func:`_refuse_unsupported`."""
    for flag in ("--no-platform", "--no-modules", "--no-security-db", "--no-installer"):
        pull.add_argument(flag, action="store_true",
                          help="accepted for d8 compatibility (only packages are mirrored)")
    pull.add_argument("--ignore-suspend", action="store_true",
                      help="accepted for d8 compatibility: package channels are never suspended")
    pull.add_argument("--no-pull-resume", action="store_true",
                      help="start from scratch: clear the working dir's cache first")
    pull.add_argument("--verbose-summary", action="store_true",
                      help="list every package with its versions in the end-of-pull summary")
    for flags, _component, kind in _UNSUPPORTED_PULL_FLAGS:
        if kind == "list":
            pull.add_argument(*flags, action="append", default=[], help=argparse.SUPPRESS)
        else:
            pull.add_argument(*flags, default=None, help=argparse.SUPPRESS)


def _refuse_unsupported(args: argparse.Namespace) -> None:
    """One ConfigError naming every given flag of a component d8mirror does not mirror."""
    given = []
    for flags, component, _kind in _UNSUPPORTED_PULL_FLAGS:
        dest = flags[-1].lstrip("-").replace("-", "_")
        value = getattr(args, dest)
        if value and value != _UNSUPPORTED_DEFAULTS.get(dest):
            given.append(f"{flags[-1]} ({component})")
    if given:
        raise ConfigError(f"d8mirror mirrors Deckhouse packages only; not supported yet: "
                          f"{', '.join(given)}. Drop these flags (and pull those components "
                          "with d8 mirror pull)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="d8mirror", description="Mirror Deckhouse packages between OCI registries and "
        "tar bundles (d8 mirror compatible), running Prefect flows in this process.")
    sub = parser.add_subparsers(dest="command", required=True)

    pull = sub.add_parser("pull", help="pull packages into a bundle directory")
    pull.add_argument("bundle", help="images bundle directory")
    pull.add_argument("--source", default="registry.deckhouse.ru/deckhouse/ee",
                      help="source repository host[:port]/path")
    pull.add_argument("--source-login", default=_env("D8_MIRROR_SOURCE_LOGIN"))
    pull.add_argument("--source-password", default=_env("D8_MIRROR_SOURCE_PASSWORD"))
    pull.add_argument("-l", "--license", default=_env("D8_MIRROR_LICENSE_TOKEN"),
                      help="Deckhouse license token")
    filters = pull.add_mutually_exclusive_group()
    filters.add_argument("--include-package", action="append", default=[],
                         metavar="NAME[@CONSTRAINT]", help="whitelist (repeatable)")
    filters.add_argument("--exclude-package", action="append", default=[],
                         metavar="NAME[@CONSTRAINT]", help="blacklist (repeatable)")
    pull.add_argument("--packages-path-suffix", default="/packages")
    pull.add_argument("--no-packages", action="store_true")
    pull.add_argument("--only-extra-images", action="store_true")
    pull.add_argument("--skip-vex-images", action="store_true")
    pull.add_argument("--proxy-registry", action="store_true")
    pull.add_argument("--dry-run", action="store_true")
    pull.add_argument("-c", "--images-bundle-chunk-size", default="0",
                      help="chunk size: decimal GB (d8) or with a unit (500MB, 1GiB)")
    pull.add_argument("--gost-digest", action="store_true")
    pull.add_argument("--force", action="store_true", help="allow a non-empty bundle dir")
    pull.add_argument("--upload-to", metavar="URL",
                      help="then upload the bundle in the same run: s3://BUCKET[/PREFIX] or "
                      "oci://REGISTRY/REPO:TAG (credentials: AWS chain / D8_MIRROR_REGISTRY_*)")
    pull.add_argument("--upload-endpoint-url", help="S3 endpoint for --upload-to")
    pull.add_argument("--concurrency", type=int, default=4, help="packages at once")
    pull.add_argument("--blob-workers", type=int, default=4, help="blobs at once per package")
    _add_tls_flags(pull)
    _add_d8_compat_flags(pull)
    pull.set_defaults(handler=run_pull_command)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def check_bundle_dir(bundle: Path, *, force: bool, dry_run: bool,
                     tmp_dir: Path | None = None) -> None:
    """§9.1: a directory (created if missing), empty unless --force (a sole .tmp is fine, and
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
        raise ConfigError(f"bundle directory {bundle} is not empty ({', '.join(extra[:3])}"
                          f"{'…' if len(extra) > 3 else ''}); use --force to write into it")


def _print_package_errors(bundle: Path) -> None:
    """The cause of each failed package, from the run's report.json."""
    try:
        report = json.loads((bundle / "report.json").read_text())
    except (OSError, ValueError):
        return
    for package in report.get("packages", []):
        if package.get("status") == "failed":
            print(f"  {package['name']}: {package.get('error') or 'failed'}", file=sys.stderr)


#: What a pull keeps in its working dir (``tasks.models``, ``tasks.pull``): all of it cache.
_PULL_CACHE_DIRS = ("blobs", "packages", "package-versions", "archives", "state")


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
                raise ConfigError(f"--no-pull-resume: cannot clear {path}: "
                                  f"{exc.strerror or exc}; remove it by hand") from exc


def _pull_parameters(args: argparse.Namespace) -> PullParameters:
    """The flow parameters of ``pull`` (credential flags stay in this process, never here)."""
    _refuse_unsupported(args)
    check_bundle_dir(Path(args.bundle), force=args.force, dry_run=args.dry_run,
                     tmp_dir=Path(args.tmp_dir) if args.tmp_dir else None)
    if args.source_password and not args.source_login:
        raise ConfigError("--source-password given without --source-login")
    from tasks.credentials import give

    for flag, var in (("source_login", "D8_MIRROR_SOURCE_LOGIN"),
                      ("source_password", "D8_MIRROR_SOURCE_PASSWORD"),
                      ("license", "D8_MIRROR_LICENSE_TOKEN")):
        give(var, getattr(args, flag))  # in this process only: children inherit os.environ
    from tasks.models import PullParameters
    from tasks.transfer_models import TransferTarget

    bundle = Path(args.bundle)
    params = PullParameters(
        bundle_dir=str(bundle), source=args.source, include_packages=args.include_package,
        exclude_packages=args.exclude_package, packages_path_suffix=args.packages_path_suffix,
        no_packages=args.no_packages, only_extra_images=args.only_extra_images,
        skip_vex_images=args.skip_vex_images, proxy_registry=args.proxy_registry,
        dry_run=args.dry_run, chunk_size=str(args.images_bundle_chunk_size),
        gost_digest=args.gost_digest, tmp_dir=args.tmp_dir, insecure=args.insecure,
        tls_skip_verify=args.tls_skip_verify, ca_file=args.ca_file,
        concurrency=args.concurrency, blob_workers=args.blob_workers,
        verbose_summary=args.verbose_summary,
        upload=None if not args.upload_to else TransferTarget(
            url=args.upload_to, endpoint_url=args.upload_endpoint_url),
    )
    params.options()  # validate filters before starting Prefect
    params.chunk_bytes()
    return params


def run_pull_command(args: argparse.Namespace) -> int:
    params = _pull_parameters(args)
    bundle = Path(params.bundle_dir)
    from flows.pull import PullFailed, run_pull
    from tasks.cancel import stop_on_signals, stop_on_signals_hook
    from tasks.runtime import stop_requested

    try:
        with stop_on_signals():
            run_pull(params, on_running=[stop_on_signals_hook])
    except PullFailed as exc:
        print(f"pull failed: {exc}", file=sys.stderr)
        _print_package_errors(bundle)
        return 1
    if stop_requested():
        print("Operation cancelled by user", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    try:
        from d8mirror.registry import check_transfer_environment  # httpx: not for --help

        check_transfer_environment()   # D8_MIRROR_TIMEOUT & co: a bad value fails at once
        if args.command not in _FLOW_MODULES:
            return int(args.handler(args))
        if args.command == "pull":
            params = _pull_parameters(args)  # bad usage fails here, before Prefect starts
            if args.no_pull_resume:
                start_without_cache(params.work_root())
        from flows import local_api

        local_api.start_early()
        warmer = start_warm_up(args, _pull_parameters) if local_api.early_server_url() else None
        try:
            importlib.import_module(_FLOW_MODULES[args.command])
            with local_api.recording_api():
                if warmer is not None:
                    warmer.stop()   # the flow takes over from here
                return int(args.handler(args))
        finally:
            if warmer is not None:
                finish_warm_up(warmer)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MirrorError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
