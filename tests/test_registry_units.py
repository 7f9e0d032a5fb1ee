"""Pure logic of the registry client: header parsers, auth flow, error mapping, credentials.

HTTP here goes through ``httpx.MockTransport`` only to pin logic (redirect credential
stripping, status mapping); features are proven against real registries elsewhere.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from d8mirror.errors import (
    ConfigError,
    DeniedError,
    ProtocolError,
    RateLimitedError,
    RegistryNetworkError,
    ServerError,
    is_retryable,
)
from d8mirror.registry import Credentials, RegistryClient, TLSOptions, resolve_credentials
from d8mirror.registry._auth import parse_challenge, predicted_scopes
from d8mirror.registry._errors import redact_url
from d8mirror.registry._links import parse_next_link

HOST = "registry.test"


def test_public_surface() -> None:
    import d8mirror.registry as registry

    assert sorted(registry.__all__) == [
        "BlobReader",
        "Credentials",
        "Descriptor",
        "Manifest",
        "RegistryClient",
        "TLSOptions",
        "TransferLimits",
        "check_transfer_environment",
        "resolve_credentials",
    ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('</v2/_catalog?last=cat%2Fr1&n=2>; rel="next"', "/v2/_catalog?last=cat%2Fr1&n=2"),
        ('<https://a.test/x?a=1,2>; rel="prev", </b?c>; rel=next', "/b?c"),
        ('<x>; title="a, b; c"; rel="last next"', "x"),
        ('<x>; rel="prev"', None),
        ("", None),
        (None, None),
    ],
)
def test_parse_next_link(header: str | None, expected: str | None) -> None:
    assert parse_next_link(header) == expected


def test_parse_challenge_keeps_commas_and_spaces_in_quotes() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.test/token",service="reg, x",'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://auth.test/token"
    assert challenge.params["service"] == "reg, x"
    assert challenge.scopes == ("repository:a/b:pull,push", "repository:c:pull")
    basic = parse_challenge('Basic realm="test-registry"')
    assert basic is not None and basic.scheme == "basic" and basic.scopes == ()
    assert parse_challenge("") is None


@pytest.mark.parametrize(
    ("method", "url", "scopes"),
    [
        ("GET", "/v2/", ()),
        ("GET", "/v2/_catalog?n=2", ("registry:catalog:*",)),
        ("GET", "/v2/a/blobs/x/tags/list", ("repository:a/blobs/x:pull",)),
        ("HEAD", "/v2/a/b/manifests/1.0", ("repository:a/b:pull",)),
        ("PUT", "/v2/a/b/manifests/1.0", ("repository:a/b:pull,push",)),
        ("POST", "/v2/a/blobs/uploads/", ("repository:a:pull,push",)),
        (
            "POST",
            "/v2/d/blobs/uploads/?mount=sha256:0&from=s/r",
            ("repository:d:pull,push", "repository:s/r:pull"),
        ),
    ],
)
def test_predicted_scopes(method: str, url: str, scopes: tuple[str, ...]) -> None:
    assert predicted_scopes(httpx.Request(method, f"https://{HOST}{url}")) == scopes


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("user", "s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(credentials)
    assert "s3cr3t-pw" not in str(credentials)
    assert "s3cr3t-pw" not in f"{credentials}"
    assert Credentials.license_token("tok") == Credentials("license-token", "tok")


def test_redact_url_hides_userinfo_and_signatures() -> None:
    url = "https://u:p@s3.test/b/o?X-Amz-Signature=abc&X-Amz-Credential=k&partNumber=1"
    redacted = redact_url(url)
    assert "u:p" not in redacted and "abc" not in redacted and "=k" not in redacted
    assert "partNumber=1" in redacted


def _mock_client(handler: httpx.MockTransport, credentials: Credentials | None) -> RegistryClient:
    return RegistryClient(HOST, credentials=credentials, transport=handler)


def test_redirect_to_another_host_drops_credentials() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("Authorization")
        if request.url.host == HOST:
            if "Authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"Location": "https://cdn.test/blob?sig=zzz"})
        return httpx.Response(200, content=b"abc")

    digest = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with (
        _mock_client(httpx.MockTransport(handler), Credentials("u", "pw")) as client,
        client.open_blob("a/b", digest) as reader,
    ):
        assert reader.read() == b"abc"
    assert (seen[HOST] or "").startswith("Basic ")
    assert seen["cdn.test"] is None


def test_a_tag_list_cut_short_is_retried_and_a_wrong_shape_is_not() -> None:
    """Invalid JSON in a 200 list (a body cut short on the way) is retryable; valid JSON of
    the wrong shape is a protocol error."""
    bodies = [
        b'{"name": "a/b", "tags": ["v1", "v',
        b'{"name": "a/b", "tags": ["v1"]}',
        b'{"name": "a/b", "tags": "v1"}',
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.pop(0))

    with _mock_client(httpx.MockTransport(handler), None) as client:
        with pytest.raises(RegistryNetworkError) as cut:
            client.list_tags("a/b")
        assert is_retryable(cut.value)
        assert client.list_tags("a/b") == ["v1"]
        with pytest.raises(ProtocolError) as shape:
            client.list_tags("a/b")
        assert not is_retryable(shape.value)


@pytest.mark.parametrize(
    ("status", "headers", "error", "retryable"),
    [
        (429, {"Retry-After": "7"}, RateLimitedError, True),
        (503, {}, ServerError, True),
        (403, {}, DeniedError, False),
        (418, {}, ProtocolError, False),
    ],
)
def test_status_mapping(
    status: int, headers: dict[str, str], error: type[Exception], retryable: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"errors": [{"code": "X", "message": "m"}]}
        return httpx.Response(status, headers=headers, content=json.dumps(body).encode())

    with _mock_client(httpx.MockTransport(handler), None) as client, pytest.raises(error) as caught:
        client.list_tags("a/b")
    assert is_retryable(caught.value) is retryable
    assert getattr(caught.value, "status", None) == status
    assert getattr(caught.value, "url", "") == f"https://{HOST}/v2/a/b/tags/list"
    if isinstance(caught.value, RateLimitedError):
        assert caught.value.retry_after == 7.0


def test_endless_tag_list_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "0"))
        return httpx.Response(
            200,
            json={"tags": [f"t{page}"]},
            headers={"Link": f'</v2/a/tags/list?page={page + 1}>; rel="next"'},
        )

    with (
        _mock_client(httpx.MockTransport(handler), None) as client,
        pytest.raises(ProtocolError, match="more than 50"),
    ):
        client.list_tags("a", limit=50)


def test_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA file"):
        RegistryClient(HOST, tls=TLSOptions(ca_file=str(tmp_path / "missing.pem")))


# -- resolve_credentials ----------------------------------------------------------------------


def _write_config(directory: Path, config: dict[str, object]) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_precedence_explicit_then_license_then_config(tmp_path: Path) -> None:
    auth = base64.b64encode(b"cfguser:cfgpass").decode()
    config = _write_config(tmp_path, {"auths": {"https://reg.test:5000/v1/": {"auth": auth}}})
    assert resolve_credentials(
        "reg.test:5000", username="u", password="p", license_token="L", docker_config=config
    ) == Credentials("u", "p")
    assert resolve_credentials(
        "reg.test:5000", license_token="L", docker_config=config
    ) == Credentials("license-token", "L")
    assert resolve_credentials("reg.test:5000", docker_config=config) == Credentials(
        "cfguser", "cfgpass"
    )
    assert resolve_credentials("other.test", docker_config=config) is None
    assert resolve_credentials("reg.test:5000", docker_config=tmp_path / "none.json") is None
    with pytest.raises(ConfigError):
        resolve_credentials("reg.test", username="u")


def test_docker_config_env_and_plain_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(tmp_path, {"auths": {"reg.test": {"username": "a", "password": "b"}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert resolve_credentials("reg.test") == Credentials("a", "b")


def _fake_helper(bin_dir: Path, name: str, answers: dict[str, tuple[str, str]]) -> None:
    script = bin_dir / f"docker-credential-{name}"
    table = {
        host: {"ServerURL": host, "Username": u, "Secret": s} for host, (u, s) in answers.items()
    }
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"table = {table!r}\n"
        "server = sys.stdin.read().strip()\n"
        "if sys.argv[1:] != ['get'] or server not in table:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(table[server]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_helper(bin_dir, "xyz", {"helped.test": ("hu", "hs")})
    _fake_helper(bin_dir, "store", {"stored.test": ("su", "ss")})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    auth = base64.b64encode(b"fu:fs").decode()
    config = _write_config(
        tmp_path,
        {
            "credHelpers": {"helped.test": "xyz"},
            "credsStore": "store",
            "auths": {"file.test": {"auth": auth}},
        },
    )
    assert resolve_credentials("helped.test", docker_config=config) == Credentials("hu", "hs")
    assert resolve_credentials("stored.test", docker_config=config) == Credentials("su", "ss")
    assert resolve_credentials("file.test", docker_config=config) == Credentials("fu", "fs")
    assert resolve_credentials("nobody.test", docker_config=config) is None
    missing = _write_config(tmp_path, {"credHelpers": {"x.test": "absent"}})
    with pytest.raises(ConfigError, match="docker-credential-absent"):
        resolve_credentials("x.test", docker_config=missing)


def test_bad_docker_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_credentials("reg.test", docker_config=path)
    bad = _write_config(tmp_path, {"auths": {"reg.test": {"auth": "!!!"}}})
    with pytest.raises(ConfigError) as caught:
        resolve_credentials("reg.test", docker_config=bad)
    assert "!!!" not in str(caught.value)


def test_oversized_manifest_and_wrong_digest_are_refused() -> None:
    from d8mirror.errors import DigestMismatchError
    from d8mirror.mediatypes import MAX_MANIFEST_BYTES, OCI_MANIFEST

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/big"):
            return httpx.Response(
                200, headers={"Content-Type": OCI_MANIFEST}, content=b" " * (MAX_MANIFEST_BYTES + 1)
            )
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=b"{}")

    wrong = "sha256:" + "0" * 64
    with _mock_client(httpx.MockTransport(handler), None) as client:
        with pytest.raises(ProtocolError, match="limit"):
            client.get_manifest("a/b", "big")
        with pytest.raises(DigestMismatchError):
            client.get_manifest("a/b", wrong)
        assert client.get_manifest("a/b", "small").data == b"{}"
