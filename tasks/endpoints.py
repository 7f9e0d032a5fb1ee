"""Registry endpoints known to this process: where credentials live instead of parameters.

Flows receive registry *names* and Secret-block names as parameters; credentials are resolved
inside the process (CLI flags, environment, Prefect Secret blocks) and registered here, so they
never appear in flow-run parameters, task inputs, cache keys, results or logs. Tasks ask for a
pooled, thread-safe client by registry host.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from d8mirror.registry import Credentials, RegistryClient, TLSOptions


@dataclass(frozen=True)
class Endpoint:
    registry: str
    credentials: Credentials | None
    tls: TLSOptions


_lock = threading.Lock()
_endpoints: dict[str, Endpoint] = {}
_clients: dict[str, RegistryClient] = {}


def register(registry: str, *, credentials: Credentials | None = None,
             tls: TLSOptions | None = None) -> None:
    """Remember how to reach ``registry``; replaces an earlier registration (and its client)."""
    endpoint = Endpoint(registry, credentials, tls or TLSOptions())
    with _lock:
        if _endpoints.get(registry) == endpoint:
            return
        _endpoints[registry] = endpoint
        old = _clients.pop(registry, None)
    if old is not None:
        old.close()


def client_for(registry: str) -> RegistryClient:
    """The shared client of ``registry`` (anonymous over HTTPS when never registered)."""
    with _lock:
        client = _clients.get(registry)
        if client is None:
            endpoint = _endpoints.get(registry) or Endpoint(registry, None, TLSOptions())
            client = RegistryClient(registry, credentials=endpoint.credentials, tls=endpoint.tls)
            _clients[registry] = client
        return client


def close_all() -> None:
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
