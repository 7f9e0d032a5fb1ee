"""Credentials resolved inside the process, never passed as parameters.

Order: a Prefect ``Secret`` block named in the parameters ("user:password", or a bare license
token), then the d8 environment variables, then docker's config.json (by the registry client).
"""

from __future__ import annotations

import os
from typing import cast

from d8mirror.registry import Credentials, resolve_credentials


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
        username=os.environ.get("D8_MIRROR_SOURCE_LOGIN") or None,
        password=os.environ.get("D8_MIRROR_SOURCE_PASSWORD") or None,
        license_token=os.environ.get("D8_MIRROR_LICENSE_TOKEN") or None,
    )


def target_credentials(registry: str, block_name: str | None = None) -> Credentials | None:
    if block_name:
        return _from_block(block_name)
    return resolve_credentials(
        registry,
        username=os.environ.get("D8_MIRROR_REGISTRY_LOGIN") or None,
        password=os.environ.get("D8_MIRROR_REGISTRY_PASSWORD") or None,
    )
