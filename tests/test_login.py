"""`skiff login`: verified against the real registry before anything is written; the config file
is private (0600); a rejected login writes nothing; the password is never printed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skiff.errors import DestinationRejected, InvalidInput
from skiff.login import login, normalise_registry
from skiff.registry.transport import TransportOptions
from support import USERS, DockerConfig, RegistryServer
from support.faultproxy import FaultProxy

# The console script users run, when installed (it is, in the project's virtualenv).
_SCRIPT = Path(sys.executable).with_name("skiff")
SKIFF = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "skiff.cli"]
FAST = TransportOptions(backoff=0.01, connect_timeout=1.0, read_timeout=5.0)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def skiff(*args: str, stdin: str | None = None) -> Run:
    result = subprocess.run(
        [*SKIFF, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=dict(os.environ),
        timeout=60,
    )
    run = Run(result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in run.output, run.output
    return run


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_private(docker_config: DockerConfig) -> None:
    assert stat.S_IMODE(docker_config.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_login_verifies_then_stores_0600(
    kind: str, request: pytest.FixtureRequest, docker_config: DockerConfig
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    run = skiff(
        "login", registry.host, "-u", "alice", "--password-stdin", stdin="alice-secret-pw\n"
    )
    assert run.code == 0, run.output
    assert f"Login succeeded: alice at {registry.host}" in run.stderr
    assert docker_config.read() == {
        "auths": {registry.host: {"auth": basic_auth("alice", USERS["alice"])}}
    }
    assert_private(docker_config)
    assert USERS["alice"] not in run.output
    # The stored login is what `skiff check` uses next.
    check = skiff("check", f"{registry.host}/alice/model")
    assert check.code == 0, check.output


def test_token_login_really_asked_the_token_service(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    assert token_registry.token_issuer is not None
    result = login(token_registry.host, "bob", USERS["bob"], options=FAST)
    assert result.registry == token_registry.host
    assert result.username == "bob"
    assert result.stored_in == docker_config.path
    requests = token_registry.token_issuer.requests
    assert [(r.user, r.status) for r in requests] == [("bob", 200)]


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_wrong_password_exits_3_and_writes_nothing(
    kind: str, request: pytest.FixtureRequest, docker_config: DockerConfig
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    run = skiff("login", registry.host, "-u", "alice", "--password-stdin", stdin="wrong-pw-9876\n")
    assert run.code == 3, run.output
    assert f"{registry.host} rejected the username 'alice'" in run.stderr
    assert not docker_config.path.exists()
    assert "wrong-pw-9876" not in run.output


def test_wrong_password_keeps_an_existing_login(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(basic_registry.host, "bob", USERS["bob"])
    before = docker_config.path.read_bytes()
    with pytest.raises(DestinationRejected):
        login(basic_registry.host, "bob", "stale", options=FAST)
    assert docker_config.path.read_bytes() == before


def test_login_keeps_other_entries(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write({"auths": {"ghcr.io": {"auth": basic_auth("me", "x")}}, "other": 1})
    run = skiff(
        "login", basic_registry.host, "-u", "bob", "--password-stdin", stdin="bob-secret-pw"
    )
    assert run.code == 0, run.output
    config = docker_config.read()
    assert config["other"] == 1
    auths = config["auths"]
    assert isinstance(auths, dict) and set(auths) == {"ghcr.io", basic_registry.host}
    assert_private(docker_config)


# A credential helper that takes its time to store (as a keychain prompt or a remote vault
# does): every login then reads config.json before any has written it back.
_SLOW_HELPER = """#!/bin/sh
test "$1" = store || exit 1
cat > "$(mktemp "{held}/stored-XXXXXX")"
sleep 0.3
"""


@pytest.mark.parametrize("store", ["file", "helper"])
def test_eight_concurrent_logins_to_different_hosts_keep_every_entry(
    plain_registry: RegistryServer,
    docker_config: DockerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
) -> None:
    """Each login reads config.json, adds its entry and writes the file back: without a lock,
    logins that end together overwrite each other's entries (4 to 6 of 8 were kept; with a
    helper, which widens the gap between the read and the write, one). A registry without
    auth costs the logins the least time before they write: they overlap the most."""
    held = tmp_path / "held"
    if store == "helper":
        bin_dir, held = tmp_path / "bin", tmp_path / "held"
        bin_dir.mkdir()
        held.mkdir()
        helper = bin_dir / "docker-credential-slowtest"
        helper.write_text(_SLOW_HELPER.format(held=held))
        helper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        docker_config.write({"credsStore": "slowtest"})
    with contextlib.ExitStack() as stack:
        # Eight hosts (ports) in front of one registry: eight different entries.
        hosts = [stack.enter_context(FaultProxy(plain_registry.host)).host for _ in range(8)]
        processes = [
            subprocess.Popen(
                [*SKIFF, "login", host, "-u", "alice", "--password-stdin"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(os.environ),
            )
            for host in hosts
        ]
        for process in processes:  # all passwords given first: the logins run together
            assert process.stdin is not None
            process.stdin.write("a-password")
            process.stdin.close()
        for process in processes:
            process.stdin = None  # closed above: communicate() must not flush it
        outputs = [process.communicate(timeout=60) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    config = docker_config.read()
    auths = config["auths"]
    assert isinstance(auths, dict)
    assert sorted(auths) == sorted(hosts)
    if store == "helper":
        assert config["credsStore"] == "slowtest"
        assert all(entry == {} for entry in auths.values())  # the secrets are the helper's
        assert len(list(held.iterdir())) == 8
    else:
        expected = {"auth": basic_auth("alice", "a-password")}
        assert all(entry == expected for entry in auths.values())
    assert_private(docker_config)
    # Nothing else beside it but the lock: no temporary file left half-written.
    assert {p.name for p in docker_config.dir.iterdir()} <= {"config.json", ".config.json.lock"}


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_debug_output_holds_no_secret(
    kind: str,
    request: pytest.FixtureRequest,
    docker_config: DockerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    minted: list[str] = []
    if registry.token_issuer is not None:
        mint = registry.token_issuer.mint

        def recording_mint(*args: Any, **kwargs: Any) -> str:
            minted.append(mint(*args, **kwargs))
            return minted[-1]

        monkeypatch.setattr(registry.token_issuer, "mint", recording_mint)
    good = skiff(
        "login", "--debug", registry.host, "-u", "alice", "--password-stdin", stdin=USERS["alice"]
    )
    bad = skiff(
        "login", "--debug", registry.host, "-u", "alice", "--password-stdin", stdin="wrong-pw-1234"
    )
    assert (good.code, bad.code) == (0, 3)
    assert "debug:" in good.stderr
    assert bool(minted) == (kind == "token")
    for secret in (
        USERS["alice"],
        "wrong-pw-1234",
        basic_auth("alice", USERS["alice"]),
        basic_auth("alice", "wrong-pw-1234"),
        *minted,
    ):
        assert secret not in good.output
        assert secret not in bad.output


def test_registry_down_exits_3(docker_config: DockerConfig) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = skiff("login", f"127.0.0.1:{port}", "-u", "alice", "--password-stdin", stdin="pw")
    assert run.code == 3
    assert f"127.0.0.1:{port}" in run.stderr
    assert not docker_config.path.exists()


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (["login", "127.0.0.1:5000", "--password-stdin"], "pw", "username is required"),
        (["login", "127.0.0.1:5000", "-u", "alice", "--password-stdin"], "\n", "password is empty"),
        (["login", "127.0.0.1:5000", "-u", "alice"], "pw", "stdin is not a terminal"),
        (["login", "not a host!", "-u", "alice", "--password-stdin"], "pw", "not a registry host"),
    ],
)
def test_bad_login_input_exits_2(
    args: list[str], stdin: str, words: str, docker_config: DockerConfig
) -> None:
    run = skiff(*args, stdin=stdin)
    assert run.code == 2, run.output
    assert words in run.stderr
    assert not docker_config.path.exists()


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("Localhost:5000/", "localhost:5000"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("ghcr.io", "ghcr.io"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalise_registry(text: str, host: str) -> None:
    assert normalise_registry(text) == host


@pytest.mark.parametrize("text", ["", "  ", "a b", "host:port", "-bad.example", "https://"])
def test_normalise_registry_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_registry(text)


def test_stored_file_is_valid_docker_config(
    plain_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    # A registry without auth accepts any login, as with docker login; the file is still Docker's.
    login(plain_registry.host, "alice", "pw", options=FAST)
    data = json.loads(docker_config.path.read_text())
    assert data == {"auths": {plain_registry.host: {"auth": basic_auth("alice", "pw")}}}
