"""Credentials: explicit flags, license token, or the Docker config (``auths`` and helpers)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from d8mirror.errors import ConfigError
from d8mirror.registry._models import Credentials

_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 30.0


def resolve_credentials(
    registry: str,
    *,
    username: str | None = None,
    password: str | None = None,
    license_token: str | None = None,
    docker_config: Path | None = None,
) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]), or None for anonymous access.

    Precedence: explicit login and password > license token > Docker config.json (the
    ``DOCKER_CONFIG`` directory or ``~/.docker``; ``credHelpers``, ``credsStore``, ``auths``).
    """
    if (username is None) != (password is None):
        raise ConfigError(
            f"credentials for {registry}: a login needs a password and a password needs a "
            "login; give both or neither"
        )
    if username is not None and password is not None:
        return Credentials(username, password)
    if license_token:
        return Credentials.license_token(license_token)
    return docker_config_credentials(registry, docker_config or default_docker_config())


def default_docker_config() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def docker_config_credentials(registry: str, config_path: Path) -> Credentials | None:
    """Credentials for ``registry`` from a Docker config file (None when it has none)."""
    config = _load_config(config_path)
    if config is None:
        return None
    host = normalize_host(registry)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        helper = _lookup(helpers, host)
        if isinstance(helper, str) and helper:
            return _from_helper(helper, registry, host)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, registry, host)
        if found is not None:
            return found
    auths = config.get("auths")
    if isinstance(auths, dict):
        entry = _lookup(auths, host)
        if isinstance(entry, dict):
            return _from_auth_entry(entry, config_path, registry)
    return None


def normalize_host(server: str) -> str:
    """``https://host:port/v1/`` → ``host:port``; Docker Hub aliases → ``index.docker.io``."""
    text = server.strip()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    host = text.split("/", 1)[0].lower()
    return "index.docker.io" if host in _DOCKER_HUB_ALIASES else host


def _lookup(table: dict[str, Any], host: str) -> Any:
    for key, value in table.items():
        if normalize_host(key) == host:
            return value
    return None


def _load_config(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the docker config {path}: {exc}") from exc
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"docker config {path} is not valid JSON: {exc}; fix or remove "
            "it, or pass credentials explicitly"
        ) from exc
    return parsed if isinstance(parsed, dict) else None


def _from_auth_entry(entry: dict[str, Any], path: Path, registry: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"docker config {path}: the 'auth' entry for {registry} is not "
                "base64 of 'user:password'; run docker login again"
            ) from exc
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise ConfigError(
                f"docker config {path}: the 'auth' entry for {registry} has no "
                "':' separator; run docker login again"
            )
        return Credentials(user, secret)
    name, plain = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(plain, str) and name:
        return Credentials(name, plain)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials("<token>", token)
    return None


def _from_helper(helper: str, registry: str, host: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get``; None when it knows nothing about the host."""
    program = f"docker-credential-{helper}"
    server = _DOCKER_HUB_KEY if host == "index.docker.io" else registry
    try:
        done = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            f"docker credential helper {program} (for {registry}) is not on "
            "PATH; install it or pass credentials explicitly"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(
            f"docker credential helper {program} did not answer for "
            f"{registry} within {_HELPER_TIMEOUT:.0f}s"
        ) from exc
    if done.returncode != 0:
        return None
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"docker credential helper {program} gave an unreadable answer for {registry}"
        ) from exc
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    return Credentials(user, secret)
