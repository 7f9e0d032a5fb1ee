"""``d8mirror verify <bundle>``: check a bundle directory offline (pure core, no Prefect)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d8mirror.verify import verify_bundle

if TYPE_CHECKING:
    from ..session import Session


def register(subparsers: Any) -> None:
    verify = subparsers.add_parser("verify", help="verify a bundle directory offline")
    verify.add_argument("bundle", help="bundle directory")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=run)


def run(args: argparse.Namespace, session: Session | None = None) -> int:
    report = verify_bundle(Path(args.bundle))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.verdict())
    return 0 if report.ok else 1
