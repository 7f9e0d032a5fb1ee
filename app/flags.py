"""The flags several commands share, defined once: how to reach a registry (TLS), who to log in
as, which Secret block holds the credentials, where to work. Each ``add_*`` adds a group of
flags to a subcommand's parser; the matching reader turns the parsed flags into what the flows
take (the fields of :class:`tasks.registry_access.RegistryAccess`, or explicit
:class:`~d8mirror.registry.Credentials` for the session to give). Defaults that come from the
environment are read when the parser is built. (The registry client, and httpx with it, is
imported only when a command runs: ``--help`` stays quick.)
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from d8mirror.errors import ConfigError

if TYPE_CHECKING:
    from d8mirror.registry import Credentials


def env(name: str) -> str | None:
    """The environment variable ``name``, None when unset or empty."""
    return os.environ.get(name) or None


# -- registry access: TLS and the credentials block ----------------------------------------------
def add_tls(parser: argparse.ArgumentParser) -> None:
    """``--insecure``, ``--tls-skip-verify``, ``--ca-file`` (default ``$SSL_CERT_FILE``)."""
    parser.add_argument("--insecure", action="store_true", help="use plain HTTP to the registry")
    parser.add_argument(
        "--tls-skip-verify", action="store_true", help="do not verify TLS certificates"
    )
    parser.add_argument(
        "--ca-file",
        default=env("SSL_CERT_FILE"),
        help="extra CA bundle (PEM) to trust (default: $SSL_CERT_FILE)",
    )


def add_credentials_block(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials-block", help="Prefect Secret block with the credentials")


def registry_access(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~tasks.registry_access.RegistryAccess` fields of the parsed flags."""
    return {
        "insecure": args.insecure,
        "tls_skip_verify": args.tls_skip_verify,
        "ca_file": args.ca_file,
        "credentials_block": getattr(args, "credentials_block", None),
    }


# -- logins ----------------------------------------------------------------------------------------
def add_source_login(parser: argparse.ArgumentParser) -> None:
    """d8's source login: ``--source-login``/``--source-password`` or ``-l``/``--license``
    (defaults: D8_MIRROR_SOURCE_LOGIN/PASSWORD, D8_MIRROR_LICENSE_TOKEN)."""
    parser.add_argument("--source-login", default=env("D8_MIRROR_SOURCE_LOGIN"))
    parser.add_argument("--source-password", default=env("D8_MIRROR_SOURCE_PASSWORD"))
    parser.add_argument(
        "-l", "--license", default=env("D8_MIRROR_LICENSE_TOKEN"), help="Deckhouse license token"
    )


def source_login(args: argparse.Namespace) -> Credentials | None:
    """The source credentials given by flags (or their variables); None when none were."""
    from d8mirror.registry import Credentials

    if args.source_password and not args.source_login:
        raise ConfigError("--source-password given without --source-login")
    if args.source_login:
        if not args.source_password:
            raise ConfigError(
                "--source-login given without --source-password (or D8_MIRROR_SOURCE_PASSWORD)"
            )
        return Credentials(args.source_login, args.source_password)
    if args.license:
        return Credentials.license_token(args.license)
    return None


def add_target_login(parser: argparse.ArgumentParser) -> None:
    """d8's target login: ``-u``/``--registry-login``, ``-p``/``--registry-password``
    (defaults: D8_MIRROR_REGISTRY_LOGIN/PASSWORD)."""
    parser.add_argument("-u", "--registry-login", default=env("D8_MIRROR_REGISTRY_LOGIN"))
    parser.add_argument("-p", "--registry-password", default=env("D8_MIRROR_REGISTRY_PASSWORD"))


def target_login(args: argparse.Namespace) -> Credentials | None:
    """The target credentials given by flags (or their variables); None when none were."""
    from d8mirror.registry import Credentials

    if args.registry_password and not args.registry_login:
        raise ConfigError("registry username not specified")
    if args.registry_login:
        return Credentials(args.registry_login, args.registry_password or "")
    return None


# -- working directory -----------------------------------------------------------------------------
def add_work_dir(parser: argparse.ArgumentParser, default: str) -> None:
    """``--tmp-dir``; ``default`` says where the command works without it."""
    parser.add_argument("--tmp-dir", default=None, help=f"working directory (default: {default})")


# -- output ----------------------------------------------------------------------------------------
def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose`` and ``--debug``, on every command (:func:`app.main.build_parser`)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every Prefect log line, and the traceback of an error",
    )
    parser.add_argument(
        "--debug", action="store_true", help="as --verbose, with Prefect's DEBUG log lines"
    )


def verbose(args: argparse.Namespace) -> bool:
    """Whether ``-v``/``--verbose`` or ``--debug`` was given."""
    return bool(getattr(args, "verbose", False) or getattr(args, "debug", False))
