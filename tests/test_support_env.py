"""The test environment itself works: real registries, the token issuer, TLS, skopeo seeding."""

from __future__ import annotations

import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from support import (
    USERS,
    DockerConfig,
    RegistryServer,
    RegistryStartError,
    TokenIssuer,
    libtrust_key_id,
    push_tiny_image,
)

ALICE = ("alice", USERS["alice"])
BOB = ("bob", USERS["bob"])


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, claims, signature = token.split(".")
    return (
        json.loads(_b64url_decode(header)),
        json.loads(_b64url_decode(claims)),
        _b64url_decode(signature),
    )


def _bearer_challenge(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    pairs = (item.split("=", 1) for item in params.split('",'))
    return {key: value.strip('"') for key, value in pairs}


def _token(issuer: TokenIssuer, scope: str, auth: tuple[str, str] | None = ALICE) -> str:
    response = httpx.get(
        issuer.realm, params={"service": issuer.service, "scope": scope}, auth=auth
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


# -- plain and basic --------------------------------------------------------------------------


def test_plain_registry_answers_the_ping(plain_registry: RegistryServer) -> None:
    response = httpx.get(f"{plain_registry.url}/v2/")

    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert plain_registry.host.startswith("127.0.0.1:")
    assert plain_registry.url == f"http://{plain_registry.host}"


def test_basic_registry_challenges_then_accepts_credentials(
    basic_registry: RegistryServer,
) -> None:
    ping = f"{basic_registry.url}/v2/"

    anonymous = httpx.get(ping)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")

    assert httpx.get(ping, auth=ALICE).status_code == 200
    assert httpx.get(ping, auth=BOB).status_code == 200
    assert httpx.get(ping, auth=("alice", "wrong")).status_code == 401


# -- token ------------------------------------------------------------------------------------


def test_token_registry_lets_the_owner_push(token_registry: RegistryServer) -> None:
    issuer = token_registry.token_issuer
    assert issuer is not None

    challenge = _bearer_challenge(httpx.get(f"{token_registry.url}/v2/"))
    assert challenge == {"realm": issuer.realm, "service": issuer.service}

    token = _token(issuer, "repository:alice/m:push,pull")
    response = httpx.post(
        f"{token_registry.url}/v2/alice/m/blobs/uploads/",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 202, response.text
    upload_id = response.headers["Docker-Upload-UUID"]
    assert token_registry.uploads("alice/m") == [upload_id]
    assert token_registry.repositories() == ["alice/m"]
    assert issuer.tokens_issued == 1
    (request,) = issuer.requests
    assert (request.user, request.authorization, request.status) == ("alice", True, 200)
    assert request.scopes == ("repository:alice/m:push,pull",)
    assert USERS["alice"] not in repr(issuer.requests) + repr(issuer)


def test_token_for_someone_elses_repo_grants_pull_only(token_registry: RegistryServer) -> None:
    issuer = token_registry.token_issuer
    assert issuer is not None

    token = _token(issuer, "repository:bob/m:push,pull")
    _, claims, _ = _jwt_parts(token)
    assert claims["access"] == [{"type": "repository", "name": "bob/m", "actions": ["pull"]}]

    response = httpx.post(
        f"{token_registry.url}/v2/bob/m/blobs/uploads/",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
    assert _bearer_challenge(response)["error"] == "insufficient_scope"
    assert token_registry.repositories() == []


def test_token_is_a_well_formed_es256_jwt(token_issuer: TokenIssuer) -> None:
    token = _token(token_issuer, "repository:alice/m:pull")
    header, claims, signature = _jwt_parts(token)

    cert = x509.load_pem_x509_certificate(token_issuer.cert_path.read_bytes())
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert header == {"typ": "JWT", "alg": "ES256", "kid": libtrust_key_id(public_key)}
    assert len(header["kid"]) == 59 and header["kid"].count(":") == 11
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    signing_input = token.rsplit(".", 1)[0].encode()
    public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    assert claims["iss"] == token_issuer.issuer
    assert claims["aud"] == token_issuer.service
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == token_issuer.lifetime == 300
    assert claims["nbf"] <= claims["iat"] and claims["jti"]


def test_token_issuer_policy(tmp_path: Path) -> None:
    with TokenIssuer(tmp_path, users=USERS, public=("library/",)) as issuer:

        def granted(scope: str, auth: tuple[str, str] | None) -> Any:
            return _jwt_parts(_token(issuer, scope, auth))[1]["access"]

        assert granted("repository:library/x:pull,push", None) == [
            {"type": "repository", "name": "library/x", "actions": ["pull"]}
        ]
        assert granted("repository:alice/x:pull", None) == []  # empty grant is not an error
        assert granted("repository:alice/x:pull,push,delete", ALICE)[0]["actions"] == [
            "pull",
            "push",
            "delete",
        ]

        wrong = httpx.get(
            issuer.realm, params={"scope": "repository:alice/x:pull"}, auth=("alice", "nope")
        )
        assert wrong.status_code == 401
        assert wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert issuer.requests[-1].status == 401
        assert issuer.tokens_issued == 3


def test_token_issuer_oauth2_password_and_refresh_grants(token_issuer: TokenIssuer) -> None:
    first = httpx.post(
        token_issuer.realm,
        data={
            "grant_type": "password",
            "username": "bob",
            "password": USERS["bob"],
            "service": token_issuer.service,
            "scope": "repository:bob/m:pull,push",
            "client_id": "skiff",
            "access_type": "offline",
        },
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["access_token"] and body["expires_in"] == 300 and body["issued_at"]

    refreshed = httpx.post(
        token_issuer.realm,
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "service": token_issuer.service,
            "scope": "repository:bob/m:pull",
            "client_id": "skiff",
        },
    )
    assert refreshed.status_code == 200
    assert "refresh_token" not in refreshed.json()
    _, claims, _ = _jwt_parts(refreshed.json()["access_token"])
    assert claims["sub"] == "bob"
    assert claims["access"][0]["actions"] == ["pull"]

    bad = httpx.post(token_issuer.realm, data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert bad.status_code == 400
    wrong = httpx.post(
        token_issuer.realm,
        data={"grant_type": "password", "username": "bob", "password": "nope"},
    )
    assert wrong.status_code == 401
    grants = [(r.method, r.grant_type, r.user, r.status) for r in token_issuer.requests]
    assert grants == [
        ("POST", "password", "bob", 200),
        ("POST", "refresh_token", "bob", 200),
        ("POST", "refresh_token", None, 400),
        ("POST", "password", "bob", 401),
    ]


# -- TLS --------------------------------------------------------------------------------------


def test_tls_registry_verifies_only_with_its_ca(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_cert is not None
    assert tls_registry.url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(tls_registry.ca_cert))

    assert httpx.get(f"{tls_registry.url}/v2/", verify=trusted).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_registry.url}/v2/")

    image = push_tiny_image(tls_registry, "team/secure")
    assert tls_registry.manifests("team/secure") == [image.manifest_digest]


def test_tls_combines_with_basic_auth(tmp_path: Path) -> None:
    with RegistryServer(tmp_path, users=USERS, tls=True) as registry:
        assert registry.ca_cert is not None
        trusted = ssl.create_default_context(cafile=str(registry.ca_cert))
        assert httpx.get(f"{registry.url}/v2/", verify=trusted).status_code == 401
        assert httpx.get(f"{registry.url}/v2/", verify=trusted, auth=ALICE).status_code == 200


# -- seeding with skopeo, storage inspection, restart -----------------------------------------


def test_skopeo_pushes_a_tiny_image_that_storage_inspection_sees(
    plain_registry: RegistryServer,
) -> None:
    image = push_tiny_image(plain_registry, "team/tiny", "v1")

    assert plain_registry.repositories() == ["team/tiny"]
    assert set(plain_registry.blobs()) == {*image.blob_digests, image.manifest_digest}
    assert plain_registry.layers("team/tiny") == image.blob_digests
    assert plain_registry.manifests("team/tiny") == [image.manifest_digest]
    assert plain_registry.tags("team/tiny") == {"v1": image.manifest_digest}
    assert plain_registry.uploads("team/tiny") == []
    manifest = httpx.get(
        f"{plain_registry.url}/v2/team/tiny/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.content == image.manifest
    assert plain_registry.blob_bytes(image.manifest_digest) == image.manifest


def test_skopeo_pushes_through_token_auth(token_registry: RegistryServer) -> None:
    image = push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    assert token_registry.tags("alice/seeded") == {"latest": image.manifest_digest}

    with pytest.raises(RuntimeError, match="skopeo push"):
        push_tiny_image(token_registry, "bob/seeded", user="alice", password=USERS["alice"])
    assert token_registry.manifests("bob/seeded") == []


def test_distinct_files_give_distinct_images(basic_registry: RegistryServer) -> None:
    one = push_tiny_image(basic_registry, "alice/a", user="alice", password=USERS["alice"])
    two = push_tiny_image(
        basic_registry, "alice/b", user="alice", password=USERS["alice"], files={"x": b"2"}
    )
    assert one.manifest_digest != two.manifest_digest
    assert basic_registry.repositories() == ["alice/a", "alice/b"]


def test_restart_keeps_port_storage_and_upload_sessions(plain_registry: RegistryServer) -> None:
    image = push_tiny_image(plain_registry, "team/tiny")
    started = httpx.post(f"{plain_registry.url}/v2/team/tiny/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    host = plain_registry.host

    plain_registry.restart()

    assert plain_registry.host == host
    assert plain_registry.tags("team/tiny") == {"latest": image.manifest_digest}
    oci = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    # Distribution 2.8 answers 404 for an OCI manifest unless the client accepts that type.
    assert httpx.get(f"{plain_registry.url}/v2/team/tiny/manifests/latest").status_code == 404
    manifest = httpx.get(f"{plain_registry.url}/v2/team/tiny/manifests/latest", headers=oci)
    assert manifest.content == image.manifest
    # The session's _state is signed with http.secret, so it must still be accepted.
    chunk = httpx.patch(location, content=b"abc")
    assert chunk.status_code == 202, chunk.text


def test_stop_really_stops_and_start_failures_show_the_log(tmp_path: Path) -> None:
    registry = RegistryServer(tmp_path / "ok")
    url = f"{registry.url}/v2/"
    registry.stop()
    registry.stop()  # idempotent
    assert not registry.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)

    with pytest.raises(RegistryStartError, match="nosuchdriver"):
        RegistryServer(tmp_path / "bad", extra_config={"storage": {"nosuchdriver": {}}})


def test_environment_is_hermetic(docker_config: DockerConfig, hermetic_env: Path) -> None:
    assert os.environ["SKIFF_CACHE_DIR"] == str(hermetic_env)
    assert "SSL_CERT_FILE" not in os.environ
    assert "SKIFF_INSECURE_REGISTRIES" not in os.environ
    assert os.environ["DOCKER_CONFIG"] == str(docker_config.dir)
    assert not docker_config.path.exists()

    docker_config.write_auth("127.0.0.1:5000", "alice", "pw")
    docker_config.write_auth("127.0.0.1:5001", "bob", "pw2")

    auths = json.loads(docker_config.path.read_text())["auths"]
    assert base64.b64decode(auths["127.0.0.1:5000"]["auth"]) == b"alice:pw"
    assert base64.b64decode(auths["127.0.0.1:5001"]["auth"]) == b"bob:pw2"
