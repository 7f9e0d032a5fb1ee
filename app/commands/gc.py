"""``d8mirror gc CACHE_DIR``: reclaim a kept pull cache (``--tmp-dir``) down to what its
newest run(s) referenced (pure core, no Prefect: :mod:`d8mirror.cache_gc`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d8mirror.cache_gc import collect_garbage
from d8mirror.errors import ConfigError

if TYPE_CHECKING:
    from ..session import Session


def register(subparsers: Any) -> None:
    gc = subparsers.add_parser(
        "gc",
        help="remove what the newest pull runs of a kept cache dir (--tmp-dir) do not use",
    )
    gc.add_argument("cache_dir", metavar="CACHE_DIR", help="the pulls' --tmp-dir")
    gc.add_argument(
        "--dry-run", action="store_true", help="report what would be removed, remove nothing"
    )
    gc.add_argument(
        "--keep-runs",
        type=int,
        default=0,
        metavar="N",
        help="also keep what the N runs before the newest referenced (default 0)",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(run=run)


def run(args: argparse.Namespace, session: Session | None = None) -> int:
    if args.keep_runs < 0:
        raise ConfigError(f"--keep-runs must be 0 or more, not {args.keep_runs}")
    report = collect_garbage(Path(args.cache_dir), keep_runs=args.keep_runs, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(report.lines()))
    return 0
