"""RegistryClient against real docker-registry processes, in every auth mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_registry_bed as bed

from d8mirror.errors import (
    ManifestNotFoundError,
    RegistryNetworkError,
    RepositoryNotFoundError,
    TLSError,
    UnauthorizedError,
)
from d8mirror.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from d8mirror.registry import Credentials, RegistryClient, TLSOptions

reg_plain = bed.reg_plain
reg_basic = bed.reg_basic
reg_tls = bed.reg_tls
reg_token = bed.reg_token

ALL_MODES = ["reg_plain", "reg_basic", "reg_tls", "reg_token"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_round_trip_per_auth_mode(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(mode)
    repository = f"roundtrip/{mode.replace('_', '-')}"
    with bed.client_for(server) as client:
        client.ping()
        data, digest = bed.push_image(client, tmp_path, repository, "1.0.0", b"layer-" * 100)
        bed.push_image(client, tmp_path, repository, "0.9.0", b"other layer")
        assert client.list_tags(repository) == ["0.9.0", "1.0.0"]
        manifest = client.get_manifest(repository, "1.0.0")
        assert manifest.data == data
        assert manifest.digest == digest == bed.sha256(data)
        assert manifest.media_type == OCI_MANIFEST
        assert manifest.json()["layers"][0]["size"] == 600
        head = client.head_manifest(repository, "1.0.0")
        assert (head.digest, head.size, head.media_type) == (digest, len(data), OCI_MANIFEST)
        assert client.get_manifest(repository, digest).data == data


@pytest.mark.parametrize("mode", ["reg_basic", "reg_tls", "reg_token"])
def test_wrong_password_is_unauthorized_and_secret_free(
    mode: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(mode)
    secret = "wrong-Secret-123"
    with bed.client_for(server, credentials=Credentials(server.username, secret)) as client:
        with pytest.raises(UnauthorizedError) as caught:
            client.list_tags("any/repo")
        assert "authentication failed" in str(caught.value)
        assert "check the credentials" in str(caught.value)
        for text in (str(caught.value), repr(caught.value), caught.value.url, repr(client)):
            assert secret not in text
        assert caught.value.status == 401


def test_anonymous_against_basic_registry_is_unauthorized(reg_basic: Any) -> None:
    with bed.client_for(reg_basic, credentials=None) as client, pytest.raises(UnauthorizedError):
        client.ping()


def test_basic_auth_is_sent_up_front_after_the_first_challenge(
    reg_basic: Any, tmp_path: Path
) -> None:
    with bed.client_for(reg_basic) as client:
        client.ping()
        reg_basic.clear_requests()
        bed.push_image(client, tmp_path, "upfront/basic", "1", b"x" * 10)
    assert [r for r in reg_basic.requests() if r[2] == 401] == []


def test_tls_without_ca_fails_with_a_hint(reg_tls: Any) -> None:
    with bed.client_for(reg_tls, tls=TLSOptions()) as client, pytest.raises(TLSError) as caught:
        client.ping()
    message = str(caught.value)
    assert "--tls-skip-verify" in message and "--ca-file" in message
    assert caught.value.url.startswith("https://127.0.0.1")


def test_tls_skip_verify_works(reg_tls: Any) -> None:
    with bed.client_for(reg_tls, tls=TLSOptions(skip_verify=True)) as client:
        client.ping()


def test_insecure_client_against_an_untrusted_tls_registry_is_not_a_success(reg_tls: Any) -> None:
    """--insecure tries HTTPS first (as d8): the TLS port answers, its certificate is not
    trusted, and plain HTTP there answers 400, which proves no plain registry: a typed TLS
    error that says how to trust the registry, never a fall back to a 400 or a success."""
    with (
        bed.client_for(reg_tls, tls=TLSOptions(insecure=True)) as client,
        pytest.raises(TLSError) as caught,
    ):
        client.ping()
    assert f"TLS certificate verification failed for {reg_tls.host}" in str(caught.value)
    assert "--ca-file" in str(caught.value)


def test_unknown_manifest_and_repository(reg_plain: Any, tmp_path: Path) -> None:
    with bed.client_for(reg_plain) as client:
        bed.push_image(client, tmp_path, "known/repo", "1", b"k")
        with pytest.raises(ManifestNotFoundError) as caught:
            client.get_manifest("known/repo", "nope")
        assert caught.value.status == 404
        assert caught.value.code == "MANIFEST_UNKNOWN"
        with pytest.raises(ManifestNotFoundError):
            client.head_manifest("known/repo", "nope")
        with pytest.raises(RepositoryNotFoundError):
            client.list_tags("unknown/repo")


def test_connection_refused_is_a_network_error() -> None:
    port = bed.free_port()
    with (
        RegistryClient(f"127.0.0.1:{port}", tls=TLSOptions(insecure=True), timeout=5) as client,
        pytest.raises(RegistryNetworkError) as caught,
    ):
        client.ping()
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_docker_and_index_manifests_keep_exact_bytes(reg_plain: Any, tmp_path: Path) -> None:
    repository = "types/mixed"
    with bed.client_for(reg_plain) as client:
        docker_data, docker_digest = bed.push_image(
            client, tmp_path, repository, "docker", b"docker-layer", DOCKER_MANIFEST
        )
        oci_data, oci_digest = bed.push_image(client, tmp_path, repository, "oci", b"oci-layer")
        for index_type, child_type, child, child_digest in (
            (OCI_INDEX, OCI_MANIFEST, oci_data, oci_digest),
            (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, docker_data, docker_digest),
        ):
            index = {
                "schemaVersion": 2,
                "mediaType": index_type,
                "manifests": [
                    {
                        "mediaType": child_type,
                        "digest": child_digest,
                        "size": len(child),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            }
            data = json.dumps(index, separators=(",", ":")).encode() + b"\n"
            tag = index_type.rsplit(".", 2)[-2].replace("+", "-")
            digest = client.put_manifest(repository, tag, data, index_type)
            fetched = client.get_manifest(repository, tag)
            assert (fetched.data, fetched.digest, fetched.media_type) == (data, digest, index_type)
            assert client.head_manifest(repository, digest).media_type == index_type
        fetched = client.get_manifest(repository, "docker")
        assert fetched.media_type == DOCKER_MANIFEST
        assert (fetched.data, fetched.digest) == (docker_data, docker_digest)


def test_catalog_follows_link_pagination(reg_plain: Any, tmp_path: Path) -> None:
    with bed.client_for(reg_plain) as client:
        for name in ("cat/r1", "cat/r2", "cat/r3"):
            bed.push_image(client, tmp_path, name, "1", name.encode())
        reg_plain.clear_requests()
        repositories = client.list_repositories(page_size=2)
        assert {"cat/r1", "cat/r2", "cat/r3"} <= set(repositories)
        assert repositories == sorted(repositories)
        assert reg_plain.count("GET", "/v2/_catalog") >= 2
        with pytest.raises(Exception, match="more than 2"):
            client.list_repositories(page_size=2, limit=2)


def test_client_is_usable_from_many_threads(reg_token: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with bed.client_for(reg_token, max_connections=4) as client:
        for index in range(4):
            bed.push_image(client, tmp_path, f"threads/r{index}", "1", f"l{index}".encode())
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: client.list_tags(f"threads/r{i % 4}"), range(32)))
    assert results == [["1"]] * 32
