"""The token server grants exactly the requested scopes, and the registry honours its tokens."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx

from testbed.registry_server import RegistryServer
from testbed.token_server import TokenServer, parse_scope

BASIC = {"Authorization": "Basic " + base64.b64encode(b"testuser:testpass").decode()}


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def test_parse_scope_keeps_nested_names() -> None:
    assert parse_scope("repository:a/b/c:pull,push") == {
        "type": "repository",
        "name": "a/b/c",
        "actions": ["pull", "push"],
    }
    assert parse_scope("registry:catalog:*") == {
        "type": "registry",
        "name": "catalog",
        "actions": ["*"],
    }


def test_grants_exactly_the_requested_scopes(tmp_path: Path) -> None:
    with TokenServer(tmp_path, {"testuser": "testpass"}) as server:
        answer = httpx.get(
            server.realm,
            headers=BASIC,
            params=[
                ("service", "x"),
                ("scope", "repository:dst:pull,push"),
                ("scope", "repository:src:pull"),
                ("scope", "registry:catalog:*"),
            ],
        )
        assert answer.status_code == 200
        claims = _claims(answer.json()["token"])
        assert claims["access"] == [
            {"type": "repository", "name": "dst", "actions": ["pull", "push"]},
            {"type": "repository", "name": "src", "actions": ["pull"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ]
        assert claims["sub"] == "testuser"
        denied = httpx.get(server.realm, params={"scope": "repository:x:pull"})
        assert denied.status_code == 401
        assert [r.granted for r in server.token_requests()] == [True, False]
        assert server.requests[1] == ["repository:x:pull"]


def test_token_registry_pull_push_mount_and_catalog(
    token_registry: RegistryServer, tmp_path: Path
) -> None:
    blob = b"token-mounted-blob"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    source = tmp_path / "blob"
    source.write_bytes(blob)
    with token_registry.client() as client:
        client.upload_blob("tok/src", digest, source)
        assert client.mount_blob("tok/dst", digest, "tok/src")
        assert client.blob_exists("tok/dst", digest)
        assert client.fetch_blob("tok/dst", digest, tmp_path / "out") == len(blob)
        assert "tok/src" in client.list_repositories()
    assert token_registry.token_server is not None
    scopes = [s for request in token_registry.token_server.requests for s in request]
    assert "repository:tok/src:pull" in scopes
