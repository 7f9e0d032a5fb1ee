"""``d8mirror``: d8-compatible command line; runs the Prefect flows in this process.

Prefect is imported only when a command runs, so ``d8mirror --help`` stays quick.
Exit codes (R-9.5): 0 success, graceful cancel (Ctrl+C, SIGTERM) or dry-run; 1 any error,
bad usage included (as d8, whose cobra exits 1 for usage errors too).

An error of d8mirror's tree is told in one block (:func:`app.console.show_error`; its
traceback only with ``-v``/``--debug``); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from d8mirror.errors import MirrorError, RunFailed
from d8mirror.memory import limit_malloc_arenas

from . import flags
from .commands import MODULES

if TYPE_CHECKING:
    from .session import Session

#: Defaults for an air-gapped tool: no telemetry, patience for a busy 2-core host.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "INFO",
}


def prepare_process() -> None:
    """:data:`PREFECT_DEFAULTS` where the environment does not set them, and the cap on
    malloc arenas (:func:`~d8mirror.memory.limit_malloc_arenas`)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    limit_malloc_arenas()


class _Parser(argparse.ArgumentParser):
    """argparse that exits 1 on bad usage, as d8 does (argparse's own code is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="d8mirror",
        description="Mirror Deckhouse packages between OCI registries and "
        "tar bundles (d8 mirror compatible), running Prefect flows in this process.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        importlib.import_module(f"{__package__}.commands.{name}").register(sub)
    for command in sub.choices.values():
        flags.add_verbosity(command)
    return parser


def run(args: argparse.Namespace, session: Session) -> int:
    """Run the parsed command line in ``session`` (left open: the caller closes it); the exit
    code. Errors the user can act on are told in one block (:func:`tell`), not raised."""
    outcome = attempt(args, session)
    if isinstance(outcome, MirrorError):
        tell(outcome, args)
        return 1
    return outcome


def attempt(args: argparse.Namespace, session: Session) -> int | MirrorError:
    """The exit code of the parsed command line run in ``session``, or the error of
    d8mirror's tree that ended it (any other exception, a bug, propagates)."""
    try:
        from d8mirror.registry import check_transfer_environment  # httpx: not for --help

        check_transfer_environment()  # D8_MIRROR_TIMEOUT & co: a bad value fails at once
        return int(args.run(args, session))
    except MirrorError as exc:
        return exc


def tell(exc: MirrorError, args: argparse.Namespace) -> None:
    """The error block of ``exc`` on stderr; a failed run's failed parts (``RunFailed.items``:
    package, layout or file -> cause) are listed in it; the traceback first with -v."""
    from .console import show_error

    items = list(exc.items) if isinstance(exc, RunFailed) else []
    show_error(exc, items, verbose=flags.verbose(args))


def main(argv: Sequence[str] | None = None) -> int:
    prepare_process()
    args = build_parser().parse_args(argv)  # --help and bad usage end here
    if args.debug:
        os.environ["PREFECT_LOGGING_LEVEL"] = "DEBUG"  # read when Prefect is imported
    from .session import Session

    with Session(verbose=flags.verbose(args)) as session:
        outcome = attempt(args, session)
    if isinstance(outcome, MirrorError):  # told once the session closed: the last lines
        tell(outcome, args)
        return 1
    return outcome


if __name__ == "__main__":
    sys.exit(main())
