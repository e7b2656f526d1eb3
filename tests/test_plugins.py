"""Platform plugins: the hints they give for Docker Hub, GHCR, ECR and Replicate failures, their
discovery through entry points, and Replicate's model-exists check.

The model check runs against a local stand-in of Replicate's HTTP API (``GET /v1/models/OWNER/NAME``
with ``Authorization: Bearer TOKEN``, answering 200 / 404 / 401 with JSON like the real one),
because the real api.replicate.com cannot be reached from the test machine (loopback only).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from skiff.preflight import CheckFailed, CheckResult, CheckSkipped, Context, Intent, Status
from skiff.preflight.plugins import load_extensions
from skiff.preflight.plugins.dockerhub import DockerHub
from skiff.preflight.plugins.ecr import ECR
from skiff.preflight.plugins.ghcr import GHCR
from skiff.preflight.plugins.replicate import ModelExists, Replicate
from skiff.reference import parse
from skiff.registry.transport import TransportOptions

VALID_TOKEN = "r8_standin_valid_token_0123456789"


def context_for(text: str) -> Context:
    return Context(text=text, options=TransportOptions(), reference=parse(text))


def failed(name: str, message: str) -> CheckResult:
    return CheckResult(name, Status.FAILED, message, "generic hint")


NO_LOGIN = failed("credentials", "no credentials for HOST (it requires a login to push)")
LOGIN_NEEDED = failed("write access", "HOST requires a login to push (HTTP 401)")
NOT_ALLOWED = failed("token scope", "'alice' may not push to HOST/x/y: grants only pull")
PROBE_DENIED = failed("write access", "'alice' may not push to HOST/x/y (missing: push)")
MISSING_REPO = failed("write access", "repository HOST/x/y does not exist (HTTP 404)")
UNREACHABLE = failed("registry", "connection to HOST:443 refused")


# -- discovery ---------------------------------------------------------------------------------


def test_builtin_platforms_are_found_through_entry_points() -> None:
    checks, platforms = load_extensions()
    names = {p.name for p in platforms}
    assert {"docker hub", "ghcr", "ecr", "replicate"} <= names
    assert not [c for c in checks if "failed to load" in getattr(c, "problem", "")]


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("ubuntu", "docker hub"),
        ("docker.io/alice/model", "docker hub"),
        ("index.docker.io/alice/model", "docker hub"),
        ("ghcr.io/alice/model", "ghcr"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/model", "ecr"),
        ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/model", "ecr"),
        ("r8.im/alice/model", "replicate"),
        ("127.0.0.1:5000/alice/model", None),
        ("quay.io/alice/model", None),
        ("ghcr.io.evil.example/alice/model", None),
        ("12345.dkr.ecr.eu-west-1.amazonaws.com/model", None),
    ],
)
def test_platform_matching(text: str, platform: str | None) -> None:
    reference = parse(text)
    matched = [p.name for p in (DockerHub(), GHCR(), ECR(), Replicate()) if p.matches(reference)]
    assert matched == ([platform] if platform else [])


# -- hints -------------------------------------------------------------------------------------


def test_docker_hub_hints() -> None:
    hub = DockerHub()
    official = context_for("ubuntu")
    hint = hub.refine(official, NOT_ALLOWED).hint
    assert hint is not None
    assert "official images" in hint and "docker.io/YOUR_USERNAME/ubuntu" in hint
    team = context_for("docker.io/someteam/model")
    hint = hub.refine(team, PROBE_DENIED).hint
    assert hint is not None and "'someteam' is not one of yours" in hint
    for login_failure in (NO_LOGIN, LOGIN_NEEDED):
        hint = hub.refine(team, login_failure).hint
        assert hint is not None
        assert "skiff login docker.io -u USERNAME --password-stdin" in hint
        assert "access token" in hint


def test_ghcr_hints() -> None:
    ghcr = GHCR()
    context = context_for("ghcr.io/acme/model:v1")
    login_hint = ghcr.refine(context, NO_LOGIN).hint
    assert login_hint is not None
    assert "write:packages" in login_hint and "skiff login ghcr.io" in login_hint
    permission_hint = ghcr.refine(context, PROBE_DENIED).hint
    assert permission_hint is not None
    assert "'acme'" in permission_hint and "package's settings" in permission_hint


def test_ecr_hints() -> None:
    ecr = ECR()
    host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    context = context_for(f"{host}/team/model")
    create = ecr.refine(context, MISSING_REPO).hint
    assert create == (
        "create it: aws ecr create-repository --repository-name team/model --region eu-west-1"
    )
    login = ecr.refine(context, NO_LOGIN).hint
    assert login is not None
    assert f"aws ecr get-login-password --region eu-west-1 | skiff login {host}" in login
    assert "-u AWS" in login
    permission = ecr.refine(context, PROBE_DENIED).hint
    assert permission is not None and "ecr:PutImage" in permission


def test_replicate_hints() -> None:
    replicate = Replicate()
    context = context_for("r8.im/someone-else/model")
    login = replicate.refine(context, NO_LOGIN).hint
    assert login is not None
    assert "replicate.com/auth/token" in login and "skiff login r8.im" in login
    permission = replicate.refine(context, PROBE_DENIED).hint
    assert permission is not None and "'someone-else'" in permission


@pytest.mark.parametrize(
    ("platform", "text"),
    [
        (DockerHub(), "docker.io/alice/model"),
        (GHCR(), "ghcr.io/alice/model"),
        (ECR(), "123456789012.dkr.ecr.eu-west-1.amazonaws.com/model"),
        (Replicate(), "r8.im/alice/model"),
    ],
)
def test_unrelated_failures_keep_their_hint(platform: Any, text: str) -> None:
    context = context_for(text)
    assert platform.refine(context, UNREACHABLE) == UNREACHABLE
    ok = CheckResult("tag", Status.OK, "latest is new")
    assert platform.refine(context, ok) == ok


def test_refine_changes_only_the_hint() -> None:
    refined = GHCR().refine(context_for("ghcr.io/a/b"), NO_LOGIN)
    assert replace(refined, hint=NO_LOGIN.hint) == NO_LOGIN


# -- Replicate's model check, against a stand-in of its API ------------------------------------
#
# The stand-in is a small HTTP server of this test's own on 127.0.0.1, playing Replicate's API
# (api.replicate.com cannot be reached from here): GET /v1/models/OWNER/NAME and GET /v1/account,
# with the status codes and JSON fields Replicate documents.


class StandIn:
    """A stand-in for Replicate's API: ``GET /v1/models/OWNER/NAME`` (200 with the model, 404 for
    an unknown one) and ``GET /v1/account`` (the token's account: type and username); 401 for a
    bad token."""

    def __init__(
        self,
        models: set[str],
        status_override: int | None = None,
        account: dict[str, Any] | None = None,
        account_status: int = 200,
    ) -> None:
        self.models = models
        self.status_override = status_override
        self.account = account or {"type": "user", "username": "alice", "name": "Alice"}
        self.account_status = account_status
        self.authorizations: list[str | None] = []
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.authorizations.append(authorization)
        self.paths.append(path)
        if self.status_override is not None:
            return self.status_override, {"detail": "stand-in failure"}
        if authorization != f"Bearer {VALID_TOKEN}":
            return 401, {"title": "Unauthenticated", "detail": "You did not pass a valid token"}
        if path == "/v1/account":
            return self.account_status, self.account
        name = path.removeprefix("/v1/models/")
        if name not in self.models:
            return 404, {"title": "Not found", "detail": "Not found."}
        owner, model = name.split("/")
        return 200, {"url": f"https://replicate.com/{name}", "owner": owner, "name": model}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = stand_in.answer(self.path, self.headers.get("Authorization"))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


@pytest.fixture
def replicate_api() -> Iterator[StandIn]:
    stand_in = StandIn({"alice/model"})
    yield stand_in
    stand_in.stop()


def test_model_exists(replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    message = ModelExists(replicate_api.url).run(context_for("r8.im/alice/model"))
    assert message == "model alice/model exists on Replicate"
    assert replicate_api.authorizations == [f"Bearer {VALID_TOKEN}"]


def test_missing_model_of_your_own_account_passes_with_a_note(
    replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    message = ModelExists(replicate_api.url).run(context_for("r8.im/alice/other-model:v2"))
    assert "alice/other-model does not exist yet" in message
    assert "Replicate creates it on the first push" in message
    assert replicate_api.paths == ["/v1/models/alice/other-model", "/v1/account"]


def test_missing_model_of_another_owner_fails_with_the_reason(
    replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    with pytest.raises(CheckFailed) as info:
        ModelExists(replicate_api.url).run(context_for("r8.im/bob/model"))
    assert "'bob' is not the account of REPLICATE_API_TOKEN ('alice')" in info.value.message
    assert "will not create it" in info.value.message
    assert info.value.hint is not None and "r8.im/alice/model" in info.value.hint
    assert "--new" in info.value.hint
    # --new: the user says bob is an organisation of theirs (Replicate's API cannot tell).
    meant = replace(context_for("r8.im/bob/model"), intent=Intent(new_repository=True))
    assert "if 'alice' belongs to the organisation 'bob' (--new)" in ModelExists(
        replicate_api.url
    ).run(meant)


def test_organization_token_cannot_create_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    stand_in = StandIn(set(), account={"type": "organization", "username": "acme", "name": "A"})
    try:
        with pytest.raises(CheckFailed) as info:
            ModelExists(stand_in.url).run(context_for("r8.im/alice/model"))
        own = ModelExists(stand_in.url).run(context_for("r8.im/acme/model"))
    finally:
        stand_in.stop()
    assert "belongs to the organization 'acme', not to 'alice'" in info.value.message
    assert "Replicate creates it on the first push" in own


def test_account_unreadable_still_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    stand_in = StandIn(set(), account_status=500)
    try:
        with pytest.raises(CheckSkipped) as info:
            ModelExists(stand_in.url).run(context_for("r8.im/alice/model"))
    finally:
        stand_in.stop()
    assert "Replicate creates it on the first push" in info.value.message


def test_bad_token(replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_expired_token_value")
    with pytest.raises(CheckFailed) as info:
        ModelExists(replicate_api.url).run(context_for("r8.im/alice/model"))
    assert "refused REPLICATE_API_TOKEN (HTTP 401)" in info.value.message
    assert info.value.hint is not None and "replicate.com/auth/token" in info.value.hint
    assert "r8_expired_token_value" not in info.value.message + info.value.hint


def test_no_token_skips_without_asking(
    replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(CheckSkipped) as info:
        ModelExists(replicate_api.url).run(context_for("r8.im/alice/model"))
    assert "REPLICATE_API_TOKEN" in info.value.message
    assert replicate_api.authorizations == []


def test_api_failure_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    stand_in = StandIn(set(), status_override=503)
    try:
        with pytest.raises(CheckSkipped) as info:
            ModelExists(stand_in.url).run(context_for("r8.im/alice/model"))
    finally:
        stand_in.stop()
    assert "HTTP 503" in info.value.message


def test_api_unreachable_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    stand_in = StandIn(set())
    stand_in.stop()  # nothing listens there any more
    with pytest.raises(CheckSkipped) as info:
        ModelExists(stand_in.url, timeout=1.0).run(context_for("r8.im/alice/model"))
    assert "could not be reached" in info.value.message


def test_api_address_comes_from_the_environment(
    replicate_api: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_REPLICATE_API_URL", replicate_api.url + "/")
    monkeypatch.setenv("REPLICATE_API_TOKEN", VALID_TOKEN)
    [check] = Replicate().checks()
    assert isinstance(check, ModelExists) and check.api_url == replicate_api.url
    assert check.run(context_for("r8.im/alice/model")) == "model alice/model exists on Replicate"
    [given] = Replicate(api_url="http://127.0.0.1:1").checks()
    assert isinstance(given, ModelExists) and given.api_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("platform", "ok"),
    [("linux/amd64", True), ("linux/arm64", False), ("linux/arm64/v8", False)],
)
def test_replicate_serves_amd64_only(platform: str, ok: bool) -> None:
    [check] = Replicate().local_checks()
    context = replace(context_for("r8.im/alice/model"), intent=Intent(platform))
    if ok:
        assert "linux/amd64" in check.run(context)
        return
    with pytest.raises(CheckFailed) as info:
        check.run(context)
    assert info.value.message == f"Replicate runs linux/amd64 images only, not {platform}"
