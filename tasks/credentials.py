"""Credentials resolved inside the process, never passed as parameters.

Order: a Prefect ``Secret`` block named in the parameters ("user:password", or a bare license
token), then values the CLI was given (:func:`give`: kept in this process, never written to
``os.environ``, which every child process would inherit), then the d8 environment variables,
then docker's config.json (by the registry client).
"""

from __future__ import annotations

import os
from typing import cast

from d8mirror.registry import Credentials, resolve_credentials

#: Values given on the command line, by the name of the d8 variable they stand for.
_given: dict[str, str] = {}


def give(variable: str, value: str | None) -> None:
    """Use ``value`` for the D8_MIRROR_* ``variable`` in this process (over the environment);
    an empty ``value`` forgets an earlier one."""
    if value:
        _given[variable] = value
    else:
        _given.pop(variable, None)


def _value(variable: str) -> str | None:
    return _given.get(variable) or os.environ.get(variable) or None


def _from_block(block_name: str) -> Credentials:
    from prefect.blocks.system import Secret

    secret = cast("Secret[str]", Secret.load(block_name))  # sync in a sync context
    value = str(secret.get())
    user, sep, password = value.partition(":")
    if sep and user:
        return Credentials(user, password)
    return Credentials.license_token(value)


def source_credentials(registry: str, block_name: str | None = None) -> Credentials | None:
    if block_name:
        return _from_block(block_name)
    return resolve_credentials(
        registry,
        username=_value("D8_MIRROR_SOURCE_LOGIN"),
        password=_value("D8_MIRROR_SOURCE_PASSWORD"),
        license_token=_value("D8_MIRROR_LICENSE_TOKEN"),
    )


def target_credentials(registry: str, block_name: str | None = None) -> Credentials | None:
    if block_name:
        return _from_block(block_name)
    return resolve_credentials(
        registry,
        username=_value("D8_MIRROR_REGISTRY_LOGIN"),
        password=_value("D8_MIRROR_REGISTRY_PASSWORD"),
    )
