"""Credentials resolved inside the process, never passed as parameters.

Order: a Prefect ``Secret`` block named in the parameters ("user:password", or a bare license
token), then the credentials the shell was given for that registry
(:func:`tasks.runtime.give_credentials`: kept in this process, never written to
``os.environ``, which every child process would inherit), then the d8 environment variables,
then docker's config.json (by the registry client).
"""

from __future__ import annotations

import os
from typing import cast

from d8mirror.registry import Credentials, resolve_credentials

from . import runtime


def _value(variable: str) -> str | None:
    return os.environ.get(variable) or None


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
    if (given := runtime.given_credentials(registry)) is not None:
        return given
    return resolve_credentials(
        registry,
        username=_value("D8_MIRROR_SOURCE_LOGIN"),
        password=_value("D8_MIRROR_SOURCE_PASSWORD"),
        license_token=_value("D8_MIRROR_LICENSE_TOKEN"),
    )


def target_credentials(registry: str, block_name: str | None = None) -> Credentials | None:
    if block_name:
        return _from_block(block_name)
    if (given := runtime.given_credentials(registry)) is not None:
        return given
    return resolve_credentials(
        registry,
        username=_value("D8_MIRROR_REGISTRY_LOGIN"),
        password=_value("D8_MIRROR_REGISTRY_PASSWORD"),
    )
