"""One module per subcommand. Each has ``register(subparsers)``, which adds its parser and
sets ``run(args, session) -> exit code``; a command that runs a flow parses and checks its
arguments first (bad usage fails before Prefect starts), then starts the session's early API
server and imports its flow module (:meth:`app.session.Session.start`)."""

from __future__ import annotations

#: The subcommands, in ``d8mirror --help`` order.
MODULES: tuple[str, ...] = (
    "pull",
    "push",
    "receipt",
    "transfer",
    "importing",
    "verify",
    "gc",
    "setup",
)
