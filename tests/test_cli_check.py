"""`skiff check` as users run it: a real subprocess against real registries, judged by exit code,
output and what is left in the registry. Never a traceback, never a secret."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import USERS, DockerConfig, RegistryServer, TokenIssuer
from support.misbehaving import MisbehavingServer, Reply, Route

# The console script users run, when installed (it is, in the project's virtualenv).
_SCRIPT = Path(sys.executable).with_name("skiff")
SKIFF = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "skiff.cli"]
CHECK_KEYS = {"name", "status", "message", "hint", "elapsed_ms"}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.stdout)  # exactly one document
        return document


def skiff(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Run:
    start = time.monotonic()
    result = subprocess.run(
        [*SKIFF, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    run = Run(result.returncode, result.stdout, result.stderr, time.monotonic() - start)
    assert "Traceback" not in run.output, run.output
    return run


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def minted(token_issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every token the issuer hands out during the test, to prove none is ever printed."""
    tokens: list[str] = []
    original = token_issuer.mint

    def recording_mint(*args: object, **kwargs: object) -> str:
        token = original(*args, **kwargs)  # type: ignore[arg-type]
        tokens.append(token)
        return token

    monkeypatch.setattr(token_issuer, "mint", recording_mint)
    yield tokens


# -- a push that will be rejected ------------------------------------------------------------


def test_alice_pushing_to_bob_exits_3_quickly(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    run = skiff("check", f"{token_registry.host}/bob/model")
    assert run.code == 3, run.output
    assert run.seconds < 5
    assert f"{token_registry.host}/bob/model" in run.stderr
    assert "'alice'" in run.stderr
    assert "missing: push" in run.stderr
    assert "error:" in run.stderr and "fix:" in run.stderr
    assert token_registry.repositories() == []
    assert token_registry.blobs() == []
    assert token_registry.uploads("bob/model") == []


def test_alice_pushing_to_bob_json(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    run = skiff("check", "--json", f"{token_registry.host}/bob/model")
    assert run.code == 3
    document = run.json()
    assert document["ok"] is False
    assert isinstance(document["error"], str) and "bob/model" in document["error"]
    checks = document["checks"]
    assert isinstance(checks, list)
    failed = [c for c in checks if c["status"] == "failed"]
    assert [c["name"] for c in failed] == ["token scope"]
    assert failed[0]["hint"]


def test_wrong_password_on_basic_registry_exits_3(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(basic_registry.host, "bob", "not-bobs-password")
    run = skiff("check", f"{basic_registry.host}/bob/model")
    assert run.code == 3
    assert "rejected the credentials of 'bob'" in run.stderr
    assert f"skiff login {basic_registry.host}" in run.stderr
    assert "not-bobs-password" not in run.output
    assert basic_registry.repositories() == []


# -- allowed destinations ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["token", "plain", "basic"])
def test_allowed_destination_exits_0_with_json(
    kind: str, request: pytest.FixtureRequest, docker_config: DockerConfig
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    if kind != "plain":
        docker_config.write_auth(registry.host, "alice", USERS["alice"])
    run = skiff("check", "--json", f"{registry.host}/alice/model:v1")
    assert run.code == 0, run.output
    assert run.stderr == ""  # with --json, stdout holds everything and stderr nothing
    document = run.json()
    assert document["ok"] is True
    assert document["reference"] == f"{registry.host}/alice/model:v1"
    checks = document["checks"]
    assert isinstance(checks, list) and checks
    for check in checks:
        assert set(check) == CHECK_KEYS
        assert check["status"] in ("ok", "skipped")
        assert isinstance(check["elapsed_ms"], int | float)
        if check["status"] == "skipped":
            assert "earlier check failed" not in check["message"]
    assert {c["name"]: c["status"] for c in checks}["write access"] == "ok"
    assert registry.blobs() == []


def test_allowed_destination_human_output(plain_registry: RegistryServer) -> None:
    run = skiff("check", f"{plain_registry.host}/team/model")
    assert run.code == 0
    assert run.stdout == ""  # humans read stderr; stdout stays clean for pipes
    assert f"ready: skiff push {plain_registry.host}/team/model" in run.stderr
    assert "write access" in run.stderr


# -- no credentials, unreachable, untrusted ----------------------------------------------------


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_no_credentials_exits_3_with_login_command(
    kind: str, request: pytest.FixtureRequest
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    run = skiff("check", f"{registry.host}/alice/model")
    assert run.code == 3
    assert "no credentials" in run.stderr
    assert f"skiff login {registry.host} -u USERNAME --password-stdin" in run.stderr


def test_registry_down_exits_3_naming_host_and_port(unused_port: int) -> None:
    run = skiff("check", "--json", f"127.0.0.1:{unused_port}/a/b")
    assert run.code == 3
    document = run.json()
    assert isinstance(document["elapsed_ms"], float) and document["elapsed_ms"] < 3000
    assert run.seconds < 6  # interpreter start included, on a loaded machine
    assert f"127.0.0.1:{unused_port}" in str(document["error"])
    assert "refused" in str(document["error"])


def test_unknown_ca_then_trusted_with_ssl_cert_file(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_cert is not None
    run = skiff("check", f"{tls_registry.host}/a/b")
    assert run.code == 3
    assert "certificate" in run.stderr and "not trusted" in run.stderr
    assert "SSL_CERT_FILE" in run.stderr
    assert f"/etc/docker/certs.d/{tls_registry.host}/ca.crt" in run.stderr
    trusted = skiff(
        "check", f"{tls_registry.host}/a/b", env={"SSL_CERT_FILE": str(tls_registry.ca_cert)}
    )
    assert trusted.code == 0, trusted.output
    assert "answers over HTTPS" in trusted.stderr


# -- malformed references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("Alice/Model:v1", "alice/model:v1"),
        ("https://ghcr.io/alice/model", "ghcr.io/alice/model"),
        ("alice/my model", "alice/my-model"),
        ("a//b", "a/b"),
        ("a/" + "b" * 300, None),
        ("a/b:-bad", None),
        ("", None),
    ],
)
def test_malformed_reference_exits_2(text: str, suggestion: str | None) -> None:
    run = skiff("check", text)
    assert run.code == 2, run.output
    assert "error:" in run.stderr and "fix:" in run.stderr
    if suggestion is not None:
        assert f"did you mean {suggestion}?" in run.stderr


def test_malformed_reference_json_exits_2() -> None:
    run = skiff("check", "--json", "Alice/Model")
    assert run.code == 2
    document = run.json()
    assert document["ok"] is False
    assert "alice/model" in str(document["hint"])


def test_bad_flag_exits_2() -> None:
    run = skiff("check", "--no-such-flag", "a/b")
    assert run.code == 2


# -- a registry that answers garbage -----------------------------------------------------------

BEARER = Reply(401, "", {"WWW-Authenticate": 'Bearer realm="{base}/token",service="s"'})
HTML = Reply(200, "<!doctype html><title>Welcome</title>", {"Content-Type": "text/html"})


def _authorized_or(challenge: Reply) -> Route:
    return lambda seen: Reply(200, "{}") if seen.authorized else challenge


GARBAGE: dict[str, tuple[dict[str, Route], str]] = {
    "bad-json-error-body": (
        {"GET /v2/": Reply(200, "{}"), "POST /v2/a/b/blobs/uploads/": Reply(403, "{errors: [")},
        "HTTP 403",
    ),
    "bad-challenge": (
        {"GET /v2/": Reply(401, "", {"WWW-Authenticate": 'Bearer realm="x" service'})},
        "malformed WWW-Authenticate",
    ),
    "401-without-challenge": ({"GET /v2/": Reply(401, "")}, "no WWW-Authenticate"),
    "redirect-loop": (
        {"GET /v2/": Reply(307, "", {"Location": "{base}/v2/"})},
        "redirected too many times",
    ),
    "5xx": ({"GET /v2/": Reply(500, "oops")}, "HTTP 500"),
    "5xx-on-probe": (
        {"GET /v2/": Reply(200, "{}"), "POST /v2/a/b/blobs/uploads/": Reply(503, "")},
        "HTTP 503",
    ),
    "token-not-json": (
        {"GET /v2/": _authorized_or(BEARER), "GET /token": Reply(200, "<html>")},
        "without a token",
    ),
    "token-missing": (
        {"GET /v2/": _authorized_or(BEARER), "GET /token": Reply(200, '{"expires_in": 300}')},
        "without a token",
    ),
    "html-on-v2": ({"GET /v2/": HTML}, "not a registry"),
    "token-service-down": (
        {
            "GET /v2/": _authorized_or(
                Reply(401, "", {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/token"'})
            )
        },
        "connection to 127.0.0.1:1 refused",
    ),
    "html-404-on-v2": (
        {"GET /v2/": Reply(404, "<html>", {"Content-Type": "text/html"})},
        "does not serve the registry API",
    ),
    "upload-without-location": (
        {"GET /v2/": Reply(200, "{}"), "POST /v2/a/b/blobs/uploads/": Reply(202, "")},
        "without a Location",
    ),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_registry_exits_3_with_a_clear_error(
    case: str, docker_config: DockerConfig
) -> None:
    routes, words = GARBAGE[case]
    with MisbehavingServer(routes) as server:
        docker_config.write_auth(server.host, "alice", USERS["alice"])
        run = skiff("check", f"{server.host}/a/b")
    assert run.code == 3, run.output
    assert words in run.stderr
    assert server.host in run.stderr
    assert "internal error:" not in run.stderr  # how the CLI reports its own bugs
    assert USERS["alice"] not in run.output


# -- secrets never printed ---------------------------------------------------------------------


def _secrets(*passwords: str) -> list[str]:
    import base64

    found = list(passwords)
    for user, password in USERS.items():
        if password in passwords:
            found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    return found


@pytest.mark.parametrize("repo", ["alice/model", "bob/model"])
def test_no_secret_in_debug_output_token_registry(
    repo: str,
    token_registry: RegistryServer,
    docker_config: DockerConfig,
    minted: list[str],
) -> None:
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    run = skiff("check", "--debug", f"{token_registry.host}/{repo}")
    json_run = skiff("check", "--json", "--debug", f"{token_registry.host}/{repo}")
    assert run.code == json_run.code == (0 if repo == "alice/model" else 3)
    assert "debug:" in run.stderr and "/token" in run.stderr  # the log is there...
    assert minted, "the issuer handed out no token"
    for secret in [*_secrets(USERS["alice"]), *minted]:
        assert secret not in run.output  # ...and holds no secret
        assert secret not in json_run.output


def test_no_secret_in_debug_output_basic_registry(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(basic_registry.host, "bob", USERS["bob"])
    ok = skiff("check", "--debug", f"{basic_registry.host}/bob/model")
    assert ok.code == 0
    docker_config.write_auth(basic_registry.host, "bob", "bob-wrong-pw-42")
    bad = skiff("check", "--debug", f"{basic_registry.host}/bob/model")
    assert bad.code == 3
    for secret in _secrets(USERS["bob"], "bob-wrong-pw-42"):
        assert secret not in ok.output
        assert secret not in bad.output


def test_cog_yaml_folder_is_checked(plain_registry: RegistryServer, tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text("build:\n  python_version: '3.11'\npredict: missing.py:P\n")
    run = skiff("check", "--dir", str(tmp_path), f"{plain_registry.host}/a/b")
    assert run.code == 2, run.output
    assert "missing.py" in run.stderr


def test_hostile_error_text_cannot_drive_the_terminal() -> None:
    """The registry writes part of the message: no escape sequences, no markup, no flood."""
    message = (
        "[bold red]denied[/] [link=http://x]click\x1b[2J\x1b[31m\nok      fake line" + "z" * 5000
    )
    body = json.dumps({"errors": [{"code": "DENIED", "message": message}]})
    routes: dict[str, Route] = {
        "GET /v2/": Reply(200, "{}"),
        "POST /v2/a/b/blobs/uploads/": Reply(403, body),
    }
    with MisbehavingServer(routes) as server:
        run = skiff("check", f"{server.host}/a/b")
    assert run.code == 3
    assert "\x1b" not in run.stderr
    assert "[bold red]denied[/]" in run.stderr  # shown as text, not interpreted
    assert "\\x1b[2J" in run.stderr
    assert "\nok      fake line" not in run.stderr
    assert len(run.stderr) < 3000


def test_arm64_to_replicate_is_refused_before_any_build(tmp_path: Path, hermetic_env: Path) -> None:
    """r8.im runs linux/amd64 only: known from the reference alone, so no registry is asked
    (r8.im cannot be reached from here) and nothing is built."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "cog.yaml").write_text("build:\n  python_version: '3.11'\npredict: predict.py:P\n")
    (model / "predict.py").write_text("class P:\n    def predict(self) -> str:\n        return 1\n")
    pushed = skiff("push", "r8.im/alice/model", "--platform", "linux/arm64", "-C", str(model))
    assert pushed.code == 3, pushed.output
    assert "Replicate runs linux/amd64 images only, not linux/arm64" in pushed.stderr
    assert list(hermetic_env.iterdir()) == []  # no build, no cache
    checked = skiff("check", "r8.im/alice/model", "--platform", "linux/arm64", "--json")
    assert checked.code == 3
    document = checked.json()
    assert document["error"] == "Replicate runs linux/amd64 images only, not linux/arm64"
    statuses = {c["name"]: c["status"] for c in document["checks"]}  # type: ignore[union-attr]
    assert statuses["platform"] == "failed" and statuses["registry"] == "skipped"
