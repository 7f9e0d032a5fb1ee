"""``d8mirror setup``: prepare a Prefect server for d8mirror's deployments.

* a global concurrency limit ``d8mirror-registry-<host>`` per ``--registry HOST[:PORT]``
  (created, or updated to ``--limit``), held by tasks when ``concurrency_limits`` is on;
* optionally a work pool (``--work-pool NAME``, type ``process`` unless ``--pool-type``) for
  ``prefect deploy --prefect-file deployments/prefect.yaml --all`` and its workers.

Idempotent: run it again to change a limit. Talks to ``PREFECT_API_URL`` (no early server:
what it creates must outlive the command).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from d8mirror.errors import ConfigError

if TYPE_CHECKING:
    from ..session import Session


def register(subparsers: Any) -> None:
    setup = subparsers.add_parser(
        "setup", help="create Prefect concurrency limits (and a work pool) for d8mirror"
    )
    setup.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry to limit (repeatable; a path after the host is ignored)",
    )
    setup.add_argument(
        "--limit",
        type=int,
        default=8,
        help="connections at once per registry, across all runs (default 8)",
    )
    setup.add_argument("--work-pool", default=None, help="also create this work pool")
    setup.add_argument(
        "--pool-type",
        default="process",
        help="work pool type: process, docker, kubernetes… (default process)",
    )
    setup.set_defaults(run=run)


def _ensure_pool(name: str, pool_type: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
            return True


def run(args: argparse.Namespace, session: Session | None = None) -> int:
    if not args.registry and not args.work_pool:
        raise ConfigError(
            "nothing to set up: give --registry HOST (repeatable) and/or --work-pool NAME"
        )
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(
            "warning: PREFECT_API_URL is not set; limits go to a temporary server and are "
            "lost when this command exits"
        )
    from tasks.concurrency import ensure_limit

    for registry in args.registry:
        name, created = ensure_limit(registry, args.limit)
        print(f"{'created' if created else 'updated'} concurrency limit {name} = {args.limit}")
    if args.work_pool:
        created = _ensure_pool(args.work_pool, args.pool_type)
        print(
            f"work pool {args.work_pool} ({args.pool_type}): {'created' if created else 'exists'}"
        )
    return 0
