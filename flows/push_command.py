"""``d8mirror push [bundle] <registry>`` (spec §9.2, §8.1, §8.6): argument parsing and the
handler that runs the mirror-push flow. Registered by ``d8mirror.cli`` (add
``"flows.push_command"`` to its ``_COMMAND_MODULES``); Prefect is imported only when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from d8mirror.errors import ConfigError
from d8mirror.push.routing import parse_target
from d8mirror.registry import Credentials

if TYPE_CHECKING:
    from tasks.push_models import PushParameters


def register(subparsers: Any) -> None:
    push = subparsers.add_parser("push", help="push bundle archives into a registry")
    push.add_argument("paths", nargs="+", metavar="[bundle] registry",
                      help="bundle dir or archive (optional), then host[:port]/path")
    push.add_argument("-u", "--registry-login", default=os.environ.get("D8_MIRROR_REGISTRY_LOGIN"))
    push.add_argument("-p", "--registry-password",
                      default=os.environ.get("D8_MIRROR_REGISTRY_PASSWORD"))
    push.add_argument("--file", action="append", default=[], help="archive to push (repeatable)")
    push.add_argument("--packages-path-suffix", default="/packages")
    push.add_argument("--modules-path-suffix", default="/modules")
    push.add_argument("--tmp-dir", default=None)
    push.add_argument("--concurrency", type=int, default=4, help="layouts at once")
    push.add_argument("--blob-workers", type=int, default=4, help="blobs at once per layout")
    push.add_argument("--insecure", action="store_true", help="plain HTTP")
    push.add_argument("--tls-skip-verify", action="store_true")
    push.add_argument("--ca-file", default=None, help="extra CA bundle (PEM)")
    push.set_defaults(handler=run_push_command)


def parse(args: argparse.Namespace) -> tuple[PushParameters, Credentials | None]:
    """PushParameters and explicit credentials from the parsed arguments (ConfigError)."""
    from tasks.push_models import PushParameters

    if len(args.paths) > 2:
        raise ConfigError("expected at most two arguments: [images-bundle-path] <registry>")
    *bundle, registry = args.paths
    parse_target(registry)
    if args.registry_password and not args.registry_login:
        raise ConfigError("registry username not specified")
    if not bundle and not args.file:
        raise ConfigError("no packages to push: specify a bundle directory before registry "
                          "URL, or use --file …")
    for path in [*bundle, *args.file, *([args.tmp_dir] if args.tmp_dir else [])]:
        _require_utf8(path)
    credentials = (Credentials(args.registry_login, args.registry_password or "")
                   if args.registry_login else None)
    params = PushParameters(
        bundle_dir=bundle[0] if bundle else None, files=args.file, registry=registry,
        insecure=args.insecure, tls_skip_verify=args.tls_skip_verify, ca_file=args.ca_file,
        packages_path_suffix=args.packages_path_suffix,
        modules_path_suffix=args.modules_path_suffix, tmp_dir=args.tmp_dir,
        concurrency=args.concurrency, blob_workers=args.blob_workers,
        registry_credentials_block=None)
    params.router()
    return params, credentials


def _require_utf8(path: str) -> None:
    """The run's parameters are recorded as JSON (UTF-8): a path whose name holds other
    bytes (shown by Python as surrogates) is refused here, by name, rather than deep inside."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(f"path {shown} is not valid UTF-8 (character {exc.start + 1} of "
                          "it): rename it, or move the bundle to a UTF-8 path") from None


def run_push_command(args: argparse.Namespace) -> int:
    params, credentials = parse(args)
    from flows.push import PushFailed, run_push
    from tasks.cancel import stop_on_signals, stop_on_signals_hook
    from tasks.runtime import stop_requested

    try:
        with stop_on_signals():
            run_push(params, credentials, on_running=[stop_on_signals_hook])
    except PushFailed as exc:
        print(f"push failed: {exc}", file=sys.stderr)
        return 1
    if stop_requested():
        print("Operation cancelled by user: rerun the push to complete it", file=sys.stderr)
    return 0
