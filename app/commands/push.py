"""``d8mirror push [bundle] <registry>`` (R-9.2, R-8.1, R-8.6): the arguments, checked before
Prefect starts, then the mirror-push flow in this process."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from d8mirror.errors import ConfigError
from d8mirror.names import DEFAULT_MODULES_PATH, DEFAULT_PACKAGES_PATH

from .. import flags, progress_display

if TYPE_CHECKING:
    from tasks.push_models import PushParameters

    from ..session import Session


def register(subparsers: Any) -> None:
    push = subparsers.add_parser("push", help="push bundle archives into a registry")
    push.add_argument(
        "paths",
        nargs="+",
        metavar="[bundle] registry",
        help="bundle dir or archive (optional), then host[:port]/path",
    )
    flags.add_target_login(push)
    push.add_argument("--file", action="append", default=[], help="archive to push (repeatable)")
    push.add_argument("--packages-path-suffix", default=DEFAULT_PACKAGES_PATH)
    push.add_argument("--modules-path-suffix", default=DEFAULT_MODULES_PATH)
    flags.add_work_dir(push, "<bundle>/.tmp/mirror")
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be uploaded and what the target has (HEAD requests only)",
    )
    add_receipt_flags(push)
    push.add_argument("--concurrency", type=int, default=4, help="layouts at once")
    push.add_argument("--blob-workers", type=int, default=4, help="blobs at once per layout")
    flags.add_tls(push)
    progress_display.add_flags(push)
    push.set_defaults(run=run)


def add_receipt_flags(parser: argparse.ArgumentParser) -> None:
    """``--receipt-out``, ``--receipt-in``, ``--receipt-omit-host``."""
    parser.add_argument(
        "--receipt-out",
        metavar="PATH",
        help="after a verified push, write the target's receipt (receipt.json + .sha256) here",
    )
    parser.add_argument(
        "--receipt-in",
        metavar="PATH",
        help="the target's previous receipt (else the target is scanned); needs --receipt-out",
    )
    parser.add_argument(
        "--receipt-omit-host",
        action="store_true",
        help="keep the registry host out of the receipt",
    )


def parameters(args: argparse.Namespace) -> PushParameters:
    """The flow parameters of ``push``, checked (ConfigError before Prefect starts); the
    login flags are not among them (see :func:`app.flags.target_login`)."""
    from d8mirror.push.routing import parse_target
    from tasks.push_models import PushParameters

    if len(args.paths) > 2:
        raise ConfigError("expected at most two arguments: [images-bundle-path] <registry>")
    *bundle, registry = args.paths
    parse_target(registry)
    flags.target_login(args)
    if not bundle and not args.file:
        raise ConfigError(
            "no packages to push: specify a bundle directory before registry URL, or use --file …"
        )
    receipts = [p for p in (args.receipt_out, args.receipt_in) if p]
    for path in [*bundle, *args.file, *([args.tmp_dir] if args.tmp_dir else []), *receipts]:
        _require_utf8(path)
    params = PushParameters(
        bundle_dir=bundle[0] if bundle else None,
        files=args.file,
        registry=registry,
        packages_path_suffix=args.packages_path_suffix,
        modules_path_suffix=args.modules_path_suffix,
        tmp_dir=args.tmp_dir,
        concurrency=args.concurrency,
        blob_workers=args.blob_workers,
        dry_run=args.dry_run,
        receipt_out=args.receipt_out,
        receipt_in=args.receipt_in,
        receipt_omit_host=args.receipt_omit_host,
        **flags.registry_access(args),
    )
    params.router()
    params.check_receipt_options()
    return params


def _require_utf8(path: str) -> None:
    """The run's parameters are recorded as JSON (UTF-8): a path whose name holds other
    bytes (shown by Python as surrogates) is refused here, by name, rather than deep inside."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(
            f"path {shown} is not valid UTF-8 (character {exc.start + 1} of "
            "it): rename it, or move the bundle to a UTF-8 path"
        ) from None


def run(args: argparse.Namespace, session: Session) -> int:
    params = parameters(args)  # bad usage fails here, before Prefect starts
    session.give_credentials(params.target().registry, flags.target_login(args))
    from ..warmup import warm_push

    # A dry-run writes nothing to the target: no warm-up (it pushes blobs ahead).
    session.start("flows.push", warm_up=None if params.dry_run else lambda: warm_push(params))
    from flows.push import run_push
    from tasks.runtime import stop_requested

    from ..signals import stop_on_signals_hook

    with session.running(graceful_stop=True), progress_display.shown(args):
        run_push(params, on_running=[stop_on_signals_hook])  # PushFailed: told by app.main
    if stop_requested():
        print("Operation cancelled by user: rerun the push to complete it", file=sys.stderr)
    return 0
