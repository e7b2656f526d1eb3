"""RegistryClient against real Distribution registries (plain, basic, token, TLS) and against a
misbehaving server: the API calls, the token cache and refresh, and typed errors for garbage."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.auth.credentials import ANONYMOUS, Credentials
from skiff.digest import Digest
from skiff.reference import Repository
from skiff.registry.auth import decode_access_claim
from skiff.registry.client import RegistryClient, UploadSession
from skiff.registry.errors import (
    Denied,
    InsecureTransport,
    NotFound,
    ProtocolError,
    ServerError,
    TLSFailure,
    TokenRejected,
    Unauthorized,
    Unreachable,
)
from skiff.registry.transport import TransportOptions
from support import USERS, RegistryServer, TokenIssuer, push_tiny_image
from support.misbehaving import MisbehavingServer, Reply

ALICE = Credentials(username="alice", password=USERS["alice"], source="test")
WRONG = Credentials(username="alice", password="not-the-password", source="test")
FAST = TransportOptions(backoff=0.01, connect_timeout=1.0, read_timeout=5.0)
MISSING = Digest("0" * 64)


def client_for(
    registry: RegistryServer | MisbehavingServer | str,
    path: str,
    credentials: Credentials = ANONYMOUS,
    options: TransportOptions = FAST,
) -> RegistryClient:
    host = registry if isinstance(registry, str) else registry.host
    return RegistryClient(Repository(host, path), credentials, options=options)


@pytest.fixture
def closing() -> Iterator[list[RegistryClient]]:
    """Clients appended here are closed after the test."""
    clients: list[RegistryClient] = []
    yield clients
    for client in clients:
        client.close()


# -- ping -------------------------------------------------------------------------------------


def test_ping_plain_registry_falls_back_to_http(plain_registry: RegistryServer) -> None:
    with client_for(plain_registry, "a/b") as client:
        ping = client.ping()
    assert ping.status == 200
    assert ping.base_url == f"http://{plain_registry.host}"
    assert ping.challenges == ()


def test_ping_token_registry_reads_the_bearer_challenge(token_registry: RegistryServer) -> None:
    assert token_registry.token_issuer is not None
    with client_for(token_registry, "alice/model") as client:
        ping = client.ping()
        assert client.auth.scheme == "bearer"
    assert ping.status == 401
    [challenge] = ping.challenges
    assert challenge.realm == token_registry.token_issuer.realm
    assert challenge.service == token_registry.token_issuer.service


def test_ping_basic_registry(basic_registry: RegistryServer) -> None:
    with client_for(basic_registry, "alice/model") as client:
        ping = client.ping()
    assert [c.scheme for c in ping.challenges] == ["basic"]


def test_tls_registry_needs_its_ca(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_cert is not None
    with client_for(tls_registry, "a/b") as client, pytest.raises(TLSFailure) as info:
        client.ping()
    assert tls_registry.host in info.value.message
    assert "not trusted" in info.value.message
    assert info.value.hint is not None and "SSL_CERT_FILE" in info.value.hint
    trusted = TransportOptions(ca_file=tls_registry.ca_cert, backoff=0.01)
    with client_for(tls_registry, "a/b", options=trusted) as client:
        assert client.ping().base_url == f"https://{tls_registry.host}"


def test_connection_refused_names_host_and_port() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, and nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with client_for(f"127.0.0.1:{port}", "a/b") as client, pytest.raises(Unreachable) as info:
        client.ping()
    assert time.monotonic() - start < 3
    assert f"127.0.0.1:{port}" in info.value.message
    assert "refused" in info.value.message


# -- token cache and refresh --------------------------------------------------------------------


def test_token_is_cached_per_scope(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    image = push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    before = token_issuer.tokens_issued
    with client_for(token_registry, "alice/seeded", ALICE) as client:
        for _ in range(4):
            assert client.head_manifest("latest") is not None
            assert client.head_blob(Digest.parse(image.layer_digest)) is not None
        assert token_issuer.tokens_issued == before + 1
        token = client.auth.token_for()
        # Granted what was asked (push, pull), not all alice may do (delete too).
        assert token is not None
        assert token.access == {"alice/seeded": frozenset({"push", "pull"})}
        # A request that needs another scope (pull on the mount source) gets its own token...
        session = client.start_upload(mount=MISSING, from_repository="bob/other")
        assert session is not None
        assert token_issuer.tokens_issued == before + 2
        # ...and the repository's own token is still the cached one.
        client.head_manifest("latest")
        assert token_issuer.tokens_issued == before + 2
        client.cancel_upload(session)


def test_expiring_token_is_refreshed(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    # Tokens that live less than the refresh margin are never reused: each call gets a new one.
    token_issuer.lifetime = 5
    push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    before = token_issuer.tokens_issued
    with client_for(token_registry, "alice/seeded", ALICE) as client:
        for _ in range(3):
            assert client.head_manifest("latest") is not None
    assert token_issuer.tokens_issued == before + 3


def test_wrong_password_is_token_rejected(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    with (
        client_for(token_registry, "alice/model", WRONG) as client,
        pytest.raises(TokenRejected) as info,
    ):
        client.head_manifest("latest")
    assert "'alice'" in info.value.message
    assert WRONG.password is not None and WRONG.password not in str(info.value)
    assert token_issuer.requests[-1].status == 401


def test_wrong_password_on_basic_registry_is_unauthorized(basic_registry: RegistryServer) -> None:
    with (
        client_for(basic_registry, "alice/model", WRONG) as client,
        pytest.raises(Unauthorized) as info,
    ):
        client.head_manifest("latest")
    assert info.value.status == 401


# -- manifests and blobs ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "basic", "token"])
def test_manifest_and_blob_lookups(
    kind: str, request: pytest.FixtureRequest, closing: list[RegistryClient]
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    creds = ANONYMOUS if kind == "plain" else ALICE
    user = None if kind == "plain" else "alice"
    password = None if kind == "plain" else USERS["alice"]
    image = push_tiny_image(registry, "alice/seeded", "v1", user=user, password=password)
    client = client_for(registry, "alice/seeded", creds)
    closing.append(client)

    found = client.head_manifest("v1")
    assert found is not None
    assert found.digest == Digest.parse(image.manifest_digest)
    assert found.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert found.size == len(image.manifest)
    by_digest = client.head_manifest(image.manifest_digest)
    assert by_digest is not None and by_digest.digest == found.digest

    body, media_type = client.get_manifest("v1")
    assert body == image.manifest
    assert media_type == "application/vnd.oci.image.manifest.v1+json"
    assert json.loads(body)["layers"][0]["digest"] == image.layer_digest

    assert client.head_manifest("v2") is None
    with pytest.raises(NotFound):
        client.get_manifest("v2")

    layer = Digest.parse(image.layer_digest)
    assert client.head_blob(layer) == len(registry.blob_bytes(image.layer_digest))
    assert client.head_blob(MISSING) is None
    expected = registry.blob_bytes(image.layer_digest)
    with client.get_blob(layer, len(expected)) as pieces:
        assert b"".join(pieces) == expected


def test_upload_session_is_opened_and_cancelled(
    token_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    client = client_for(token_registry, "alice/model", ALICE)
    closing.append(client)
    session = client.start_upload()
    assert isinstance(session, UploadSession)
    assert session.location.startswith(f"http://{token_registry.host}/v2/alice/model/blobs/")
    assert len(token_registry.open_uploads("alice/model")) == 1
    assert client.cancel_upload(session, scopes=("repository:alice/model:delete",)) is True
    assert token_registry.open_uploads("alice/model") == []
    assert client.send("GET", session.location, what="status").status_code == 404
    assert token_registry.blobs() == []


def test_cross_repository_mount(
    token_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    image = push_tiny_image(token_registry, "alice/base", user="alice", password=USERS["alice"])
    client = client_for(token_registry, "alice/derived", ALICE)
    closing.append(client)
    layer = Digest.parse(image.layer_digest)
    assert client.head_blob(layer) is None
    assert client.start_upload(mount=layer, from_repository="alice/base") is None  # 201
    assert client.head_blob(layer) is not None
    assert token_registry.layers("alice/derived") == [image.layer_digest]
    assert token_registry.uploads("alice/derived") == []


def test_mount_of_an_unknown_blob_opens_a_normal_session(
    plain_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    client = client_for(plain_registry, "a/derived")
    closing.append(client)
    session = client.start_upload(mount=MISSING, from_repository="a/base")
    assert session is not None
    assert client.cancel_upload(session)


def test_push_to_someone_elses_repository_is_denied(
    token_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    client = client_for(token_registry, "bob/model", ALICE)
    closing.append(client)
    with pytest.raises(Denied) as info:
        client.start_upload()
    assert info.value.status == 401
    assert token_registry.repositories() == []


def test_anonymous_push_is_unauthorized(
    token_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    client = client_for(token_registry, "alice/model")
    closing.append(client)
    with pytest.raises(Unauthorized) as info:
        client.start_upload()
    assert not isinstance(info.value, Denied)


# -- garbage ------------------------------------------------------------------------------------

BEARER_HERE = {"WWW-Authenticate": 'Bearer realm="{base}/token",service="s"'}
HTML = "<html><body><h1>Welcome to nginx!</h1></body></html>"


def _serve(routes: dict[str, Reply]) -> MisbehavingServer:
    return MisbehavingServer(routes)


@pytest.mark.parametrize(
    ("routes", "error", "words"),
    [
        pytest.param(
            {"GET /v2/": Reply(401, "{}")}, ProtocolError, "no WWW-Authenticate", id="401-bare"
        ),
        pytest.param(
            {"GET /v2/": Reply(401, "", {"WWW-Authenticate": 'Bearer realm="nope'})},
            ProtocolError,
            "malformed WWW-Authenticate",
            id="bad-challenge",
        ),
        pytest.param(
            {"GET /v2/": Reply(401, "", {"WWW-Authenticate": "Negotiate"})},
            ProtocolError,
            "does not speak",
            id="unknown-scheme",
        ),
        pytest.param(
            {"GET /v2/": Reply(302, "", {"Location": "{base}/v2/"})},
            ProtocolError,
            "redirect",
            id="redirect-loop",
        ),
        pytest.param({"GET /v2/": Reply(503, "<h1>down</h1>")}, ServerError, "HTTP 503", id="5xx"),
        pytest.param(
            {"GET /v2/": Reply(404, HTML, {"Content-Type": "text/html"})},
            ProtocolError,
            "does not serve the registry API",
            id="html-404",
        ),
        pytest.param(
            {"GET /v2/": Reply(200, HTML, {"Content-Type": "text/html"})},
            ProtocolError,
            "not a registry",
            id="html-200",
        ),
    ],
)
def test_garbage_on_ping_is_a_typed_error(
    routes: dict[str, Reply], error: type[Exception], words: str
) -> None:
    with (
        _serve(routes) as server,
        client_for(server, "a/b") as client,
        pytest.raises(error) as info,
    ):
        client.ping()
    assert words in str(info.value)
    assert server.host in str(info.value)


@pytest.mark.parametrize(
    ("token_reply", "words"),
    [
        pytest.param(Reply(200, "<html>not json</html>"), "without a token", id="non-json"),
        pytest.param(Reply(200, '{"expires_in": 60}'), "without a token", id="no-token"),
        pytest.param(Reply(200, '{"token": 42}'), "without a token", id="token-not-string"),
        pytest.param(Reply(200, "[1, 2]"), "without a token", id="json-list"),
        pytest.param(Reply(500, "oops"), "HTTP 500", id="token-5xx"),
        pytest.param(Reply(302, "", {"Location": "{base}/token"}), "redirect", id="token-loop"),
    ],
)
def test_garbage_from_the_token_service_is_a_protocol_error(token_reply: Reply, words: str) -> None:
    routes = {
        "GET /v2/": Reply(401, "", BEARER_HERE),
        "HEAD /v2/a/b/manifests/latest": Reply(401, "", BEARER_HERE),
        "GET /token": token_reply,
    }
    with (
        _serve(routes) as server,
        client_for(server, "a/b", ALICE) as client,
        pytest.raises(ProtocolError) as info,
    ):
        client.head_manifest("latest")
    assert words in str(info.value)
    assert USERS["alice"] not in str(info.value)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        pytest.param(Reply(403, "{not json"), Denied, id="403-bad-json"),
        pytest.param(Reply(403, '{"errors": "DENIED"}'), Denied, id="403-errors-not-list"),
        pytest.param(Reply(404, '{"errors": [{"code": 7}]}'), NotFound, id="404-code-not-str"),
        pytest.param(Reply(500, "\xff\xfe"), ServerError, id="500-binary"),
        pytest.param(Reply(418, "teapot"), ProtocolError, id="418"),
        pytest.param(Reply(202, ""), ProtocolError, id="202-no-location"),
        pytest.param(Reply(202, "", {"Location": "::::"}), ProtocolError, id="202-bad-location"),
    ],
)
def test_garbage_from_the_upload_endpoint_is_typed(reply: Reply, error: type[Exception]) -> None:
    routes = {"GET /v2/": Reply(200, "{}"), "POST /v2/a/b/blobs/uploads/": reply}
    with (
        _serve(routes) as server,
        client_for(server, "a/b") as client,
        pytest.raises(error) as info,
    ):
        client.start_upload()
    assert server.host in str(info.value)


def test_registry_error_body_is_quoted() -> None:
    body = json.dumps(
        {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
    )
    routes = {"GET /v2/": Reply(200, "{}"), "POST /v2/a/b/blobs/uploads/": Reply(403, body)}
    with (
        _serve(routes) as server,
        client_for(server, "a/b") as client,
        pytest.raises(Denied) as info,
    ):
        client.start_upload()
    assert info.value.code == "DENIED"
    assert "requested access to the resource is denied" in info.value.message


def test_server_errors_are_retried_then_reported() -> None:
    routes = {"GET /v2/": Reply(200, "{}"), "HEAD /v2/a/b/manifests/latest": Reply(502, "")}
    with (
        _serve(routes) as server,
        client_for(server, "a/b") as client,
        pytest.raises(ServerError),
    ):
        client.head_manifest("latest")
    heads = [s for s in server.seen if s.method == "HEAD"]
    assert len(heads) == FAST.attempts


def _bearer_at(realm: str) -> dict[str, Reply]:
    challenge = Reply(401, "", {"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})
    return {"GET /v2/": challenge, "HEAD /v2/a/b/manifests/latest": challenge}


def test_unreachable_token_service_is_named_not_the_registry(unused_port: int) -> None:
    realm = f"http://127.0.0.1:{unused_port}/token"
    with (
        _serve(_bearer_at(realm)) as server,
        client_for(server, "a/b", ALICE) as client,
        pytest.raises(Unreachable) as info,
    ):
        client.head_manifest("latest")
    message = info.value.message
    assert message.startswith(f"connection to 127.0.0.1:{unused_port} refused")
    assert f"where {server.host} sent skiff" in message
    assert info.value.hint is not None and "is the registry running" not in info.value.hint


@pytest.mark.parametrize("realm", ["ftp://x/token", "not a url", "http://"])
def test_unusable_realm_is_a_protocol_error(realm: str) -> None:
    with (
        _serve(_bearer_at(realm)) as server,
        client_for(server, "a/b", ALICE) as client,
        pytest.raises(ProtocolError) as info,
    ):
        client.head_manifest("latest")
    assert f"{server.host} named an unusable token service" in info.value.message


def test_credentials_never_go_over_plain_http_to_another_machine() -> None:
    # 192.0.2.1 is TEST-NET-1: skiff must refuse before it even tries to connect.
    with (
        _serve(_bearer_at("http://192.0.2.1/token")) as server,
        client_for(server, "a/b", ALICE) as client,
        pytest.raises(InsecureTransport) as info,
    ):
        client.head_manifest("latest")
    assert "over plain HTTP to 192.0.2.1" in info.value.message


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_identity_token_is_exchanged_at_the_token_service(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    """docker config "identitytoken": an OAuth2 refresh token, never a password."""
    import httpx

    answer = httpx.post(
        token_issuer.realm,
        data={
            "grant_type": "password",
            "username": "alice",
            "password": USERS["alice"],
            "access_type": "offline",
            "service": token_issuer.service,
            "client_id": "test",
        },
    ).json()
    refresh = answer["refresh_token"]
    push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    creds = Credentials(username="alice", identity_token=refresh, source="test")
    with client_for(token_registry, "alice/seeded", creds) as client:
        assert client.head_manifest("latest") is not None
        assert client.start_upload() is not None
    last = token_issuer.requests[-1]
    assert (last.method, last.grant_type, last.user) == ("POST", "refresh_token", "alice")
    assert last.scopes == ("repository:alice/seeded:push,pull",)


def test_registry_token_is_sent_as_is(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    """docker config "registrytoken": a bearer token used without asking the token service."""
    from support import Access

    push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    token = token_issuer.mint("alice", [Access("repository", "alice/seeded", ("pull",))])
    before = len(token_issuer.requests)
    creds = Credentials(registry_token=token, source="test")
    with client_for(token_registry, "alice/seeded", creds) as client:
        assert client.head_manifest("latest") is not None
        with pytest.raises(Denied):  # the token grants pull only
            client.start_upload()
    assert len(token_issuer.requests) == before


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=4).map(".".join)))
def test_access_claim_of_any_text_is_a_mapping_or_none(token: str) -> None:
    claim = decode_access_claim(token)
    assert claim is None or all(isinstance(v, frozenset) for v in claim.values())


@pytest.mark.parametrize(
    "claims",
    [
        {"access": "all"},
        {"access": [1, None, {"type": "repository", "name": 3, "actions": ["push"]}]},
        {"access": [{"type": "registry", "name": "catalog", "actions": ["*"]}]},
        [],
    ],
)
def test_odd_access_claims(claims: object) -> None:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    claim = decode_access_claim(f"e30.{payload}.sig")
    assert claim in (None, {})


def test_token_repr_hides_the_token(
    token_registry: RegistryServer, closing: list[RegistryClient]
) -> None:
    client = client_for(token_registry, "alice/model", ALICE)
    closing.append(client)
    client.head_manifest("latest")
    token = client.auth.token_for()
    assert token is not None and token.access is not None
    assert token.value not in repr(token)
    assert USERS["alice"] not in repr(client.credentials)


@pytest.mark.parametrize(("retry_after", "attempts"), [("0", 3), ("3600", 1), ("soon", 3)])
def test_retry_after_is_honoured(retry_after: str, attempts: int) -> None:
    """A short Retry-After is waited for; one longer than a preflight can afford is not."""
    routes = {
        "GET /v2/": Reply(200, "{}"),
        "HEAD /v2/a/b/manifests/latest": Reply(503, "", {"Retry-After": retry_after}),
    }
    start = time.monotonic()
    with (
        _serve(routes) as server,
        client_for(server, "a/b") as client,
        pytest.raises(ServerError) as info,
    ):
        client.head_manifest("latest")
    assert time.monotonic() - start < 3
    assert info.value.status == 503
    assert len([s for s in server.seen if s.method == "HEAD"]) == attempts


def test_token_the_registry_no_longer_accepts_is_replaced(
    token_registry: RegistryServer, token_issuer: TokenIssuer, tmp_path: Path
) -> None:
    """A cached token that still looks fresh but is refused (the registry's signing key rotated,
    or clocks disagree) is replaced on the 401, and the request goes through."""
    push_tiny_image(token_registry, "alice/seeded", user="alice", password=USERS["alice"])
    with client_for(token_registry, "alice/seeded", ALICE) as client:
        assert client.head_manifest("latest") is not None
        old = client.auth.token_for()
        with TokenIssuer(tmp_path / "rotated", users=USERS) as rotated:
            token_registry.token_issuer = rotated
            token_registry.restart()
            assert client.head_manifest("latest") is not None
            assert rotated.tokens_issued == 1
        new = client.auth.token_for()
    assert old is not None and new is not None and new.value != old.value
