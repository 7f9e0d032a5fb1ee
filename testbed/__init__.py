"""Test bed: local registries, a token server, deterministic images and Deckhouse-shaped content.

Used by the tests, the demo and the benchmarks; never by the product. Imports d8mirror core
modules only (never Prefect). Servers bind 127.0.0.1 only.
"""

from testbed.registry_server import RegistryServer, RegistryStartError, free_port
from testbed.token_server import TokenServer, make_self_signed_certificate

__all__ = [
    "RegistryServer",
    "RegistryStartError",
    "TokenServer",
    "free_port",
    "make_self_signed_certificate",
]
