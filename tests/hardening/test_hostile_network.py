"""What a registry (or the storage and token services it names) can do to skiff on the wire:
ask for credentials it must not get, never answer, trickle, send too much, or misstate digests
and sizes. Real registries where they can misbehave that way (through the fault proxy), else a
small misbehaving server of the tests' own (tests/support/misbehaving.py), on 127.0.0.1,
127.0.0.2 and ``localhost``: three different origins of this machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardutil import MB, SKIFF, make_model
from throttle import Throttle

from skiff import reference as refs
from skiff.digest import Digest
from skiff.errors import BuildFailed
from skiff.image.base import pull_base
from skiff.image.layout import Layout
from skiff.image.oci import Platform
from skiff.preflight import run_preflight
from skiff.registry.client import RegistryClient
from skiff.registry.errors import OversizedAnswer
from skiff.registry.upload import BlobSource, Outcome, push_blob
from support import DockerConfig, RegistryServer
from support.faultproxy import FaultProxy
from support.misbehaving import MisbehavingServer, Reply, Seen

REPO = "demo/app"
USER, PASSWORD = "alice", "alice-registry-password"
BLOB = b"a small layer\n" * 10
BLOB_DIGEST = Digest.of(BLOB)


def credential(header: str) -> str:
    """What the misbehaving server records for an Authorization header."""
    return f"{header.split(' ', 1)[0]} {hashlib.sha256(header.encode()).hexdigest()[:12]}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_only(reply: Reply) -> object:
    """A route that answers ``reply`` to a request with credentials, else a Basic challenge."""

    def route(seen: Seen) -> Reply:
        if seen.authorized:
            return reply
        return Reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="registry"'})

    return route


@pytest.fixture
def servers() -> Iterator[list[MisbehavingServer]]:
    started: list[MisbehavingServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[MisbehavingServer], *args: object, **kw: object) -> MisbehavingServer:
    server = MisbehavingServer(*args, **kw)  # type: ignore[arg-type]
    servers.append(server)
    return server


def client_for(host: str) -> RegistryClient:
    return RegistryClient(refs.parse(f"{host}/{REPO}:v1").repository, _resolve(host))


def _resolve(host: str) -> object:
    from skiff.auth import dockerconfig

    return dockerconfig.resolve(host)


def run_skiff(*args: str, timeout: float = 60, **env: str) -> tuple[int, str, float]:
    """Exit code, stdout + stderr, and seconds taken; stdout alone in ``LAST_STDOUT``."""
    started = time.monotonic()
    done = subprocess.run(
        [str(SKIFF), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        input="pw\n",
    )
    LAST_STDOUT[:] = [done.stdout]
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


LAST_STDOUT: list[str] = []


# -- credentials go to the registry's own origin only -----------------------------------------


def test_an_upload_location_on_another_origin_gets_no_credentials(
    servers: list[MisbehavingServer], docker_config: DockerConfig
) -> None:
    """S3- or CDN-backed registries hand out upload locations on another host: neither the
    write probe of ``skiff check`` nor the upload sends the registry's password there."""
    storage = serve(
        servers,
        {"PUT /upload/u1": Reply(201), "DELETE /upload/u1": Reply(204)},
        name="localhost",
    )
    location = f"{storage.url}/upload/u1?X-Amz-Signature=presigned"
    registry = serve(
        servers,
        {
            "GET /v2/": basic_only(Reply(200, b"{}")),
            f"POST /v2/{REPO}/blobs/uploads/": basic_only(
                Reply(202, headers={"Location": location})
            ),
        },
    )
    docker_config.write_auth(registry.host, USER, PASSWORD)

    report = run_preflight(f"{registry.host}/{REPO}:v1")
    assert report.ok, report.to_json()
    with client_for(registry.host) as client:
        result = push_blob(client, BlobSource(BLOB_DIGEST, len(BLOB), lambda: _bytes(BLOB)))
    assert result.outcome is Outcome.UPLOADED

    assert [s.method for s in storage.seen] == ["DELETE", "PUT"]
    assert not any(s.authorized for s in storage.seen), storage.seen
    posts = [s for s in registry.seen if s.method == "POST"]
    assert posts and all(s.credential == credential(basic(USER, PASSWORD)) for s in posts)


def _bytes(data: bytes) -> object:
    import io

    return io.BytesIO(data)


def test_a_plain_http_location_on_another_machine_gets_no_token(
    servers: list[MisbehavingServer], docker_config: DockerConfig, own_name: str
) -> None:
    """A token registry whose upload Location is plain HTTP on a host that is not loopback by
    name (this machine's host name stands in for one elsewhere): the token stays home."""
    tokens = serve(servers, {"GET /token": Reply(200, b'{"token": "push-token"}')})
    token = credential("Bearer push-token")
    challenge = {"WWW-Authenticate": f'Bearer realm="{tokens.url}/token",service="registry"'}

    def bearer_only(reply: Reply) -> object:
        return lambda seen: reply if seen.credential == token else Reply(401, b"{}", challenge)

    storage = serve(servers, {"PUT /upload/u1": Reply(201)})
    location = f"http://{own_name}:{storage.port}/upload/u1?sig=presigned"
    registry = serve(
        servers,
        {
            "GET /v2/": bearer_only(Reply(200, b"{}")),
            f"HEAD /v2/{REPO}/blobs/{BLOB_DIGEST}": bearer_only(Reply(404, b"{}")),
            f"POST /v2/{REPO}/blobs/uploads/": bearer_only(
                Reply(202, headers={"Location": location})
            ),
        },
    )
    docker_config.write_auth(registry.host, USER, PASSWORD)
    with client_for(registry.host) as client:
        result = push_blob(client, BlobSource(BLOB_DIGEST, len(BLOB), lambda: _bytes(BLOB)))
    assert result.outcome is Outcome.UPLOADED
    assert [s.method for s in storage.seen] == ["PUT"]
    assert not any(s.authorized for s in storage.seen), storage.seen
    assert any(s.credential == token for s in registry.seen)


@pytest.mark.parametrize("storage_login", [False, True], ids=["anonymous", "own-login"])
def test_a_401_from_another_host_is_answered_with_that_hosts_credentials_only(
    servers: list[MisbehavingServer], docker_config: DockerConfig, storage_login: bool
) -> None:
    """A blob download redirected to storage that asks for a token from a realm it names: the
    realm gets the credentials the user has for the storage host (here none, or its own login),
    never the registry's password; as containerd does."""
    tokens = serve(
        servers, {"GET /token": Reply(200, b'{"token": "storage-token"}')}, address="127.0.0.2"
    )
    storage_token = credential("Bearer storage-token")

    def blob(seen: Seen) -> Reply:
        if seen.credential == storage_token:
            return Reply(200, BLOB)
        challenge = f'Bearer realm="{tokens.url}/token",service="storage"'
        return Reply(401, b"{}", {"WWW-Authenticate": challenge})

    storage = serve(servers, {"GET /blob": blob}, name="localhost")
    registry = serve(
        servers,
        {
            "GET /v2/": basic_only(Reply(200, b"{}")),
            f"GET /v2/{REPO}/blobs/{BLOB_DIGEST}": basic_only(
                Reply(307, headers={"Location": f"{storage.url}/blob"})
            ),
        },
    )
    docker_config.write_auth(registry.host, USER, PASSWORD)
    if storage_login:
        docker_config.write_auth(storage.host, "carol", "carol-storage-password")

    with client_for(registry.host) as client, client.get_blob(BLOB_DIGEST, len(BLOB)) as body:
        assert b"".join(body) == BLOB

    expected = credential(basic("carol", "carol-storage-password")) if storage_login else ""
    assert [s.credential for s in tokens.seen] == [expected]
    assert storage.seen[-1].credential == storage_token
    # The registry's password went to the registry, and nowhere else.
    registry_password = credential(basic(USER, PASSWORD))
    assert all(s.credential != registry_password for s in (*tokens.seen, *storage.seen))


# -- every wait is bounded ---------------------------------------------------------------------


def test_login_check_and_push_give_up_on_a_token_service_that_never_answers(
    servers: list[MisbehavingServer], docker_config: DockerConfig, tmp_path: Path
) -> None:
    tokens = serve(servers, {"GET /token": Reply(200, b"{}", hang=300)}, address="127.0.0.2")
    challenge = f'Bearer realm="{tokens.url}/token",service="registry"'
    registry = serve(servers, fallback=Reply(401, b"{}", {"WWW-Authenticate": challenge}))
    docker_config.write_auth(registry.host, USER, PASSWORD)
    model = make_model(tmp_path)
    ref = f"{registry.host}/{REPO}:v1"
    for command in (
        ("login", registry.host, "-u", USER, "--password-stdin"),
        ("check", ref),
        ("push", ref, "-C", str(model)),
    ):
        code, output, took = run_skiff(*command, SKIFF_TIMEOUT="2")
        assert code == 3, (command, output)
        assert took < 20, (command, took)
        assert tokens.host in output, output
        assert "Traceback" not in output


def test_a_registry_trickling_its_answers_cannot_stretch_a_check(
    servers: list[MisbehavingServer],
) -> None:
    """One byte a second is never silent for SKIFF_TIMEOUT (3 s), yet the answer as a whole
    must arrive within it: ``skiff check`` ends with exit 3 naming the host and the phase."""
    registry = serve(servers, {"GET /v2/": Reply(200, b"{}" * 100, trickle=1.0)})
    code, output, took = run_skiff("check", f"{registry.host}/{REPO}:v1", SKIFF_TIMEOUT="3")
    assert code == 3, output
    assert took < 15, took
    assert registry.host in output and "preflight" in output, output


def test_a_check_of_slow_answers_ends_by_its_overall_deadline(
    servers: list[MisbehavingServer],
) -> None:
    """Each answer comes after 2 s, under SKIFF_TIMEOUT (5 s): a preflight of several requests
    still ends by SKIFF_DEADLINE (3 s)."""
    session = {"Location": f"/v2/{REPO}/blobs/uploads/u1"}
    registry = serve(
        servers,
        fallback=Reply(404, b"{}", hang=2.0),
        routes={
            "GET /v2/": Reply(200, b"{}", hang=2.0),
            f"POST /v2/{REPO}/blobs/uploads/": Reply(202, headers=session, hang=2.0),
            f"DELETE /v2/{REPO}/blobs/uploads/u1": Reply(204, hang=2.0),
        },
    )
    code, output, took = run_skiff(
        "check", f"{registry.host}/{REPO}:v1", SKIFF_TIMEOUT="5", SKIFF_DEADLINE="3"
    )
    assert code == 3, output
    assert took < 6, took
    assert registry.host in output and "SKIFF_DEADLINE" in output, output


def test_a_registry_silent_mid_push_fails_the_push_within_the_deadline(
    registry: RegistryServer, servers: list[MisbehavingServer], tmp_path: Path
) -> None:
    """Every upload request is accepted and never answered: exit 5 once nothing has moved for
    SKIFF_DEADLINE, naming the upload and the host (before: 10 to 40 minutes)."""
    session = {"Location": f"/v2/{REPO}/blobs/uploads/u1?_state=s"}
    silent = serve(
        servers,
        {
            "GET /v2/": Reply(200, b"{}"),
            f"POST /v2/{REPO}/blobs/uploads/": Reply(202, headers=session),
            f"DELETE /v2/{REPO}/blobs/uploads/u1": Reply(204),
            f"PUT /v2/{REPO}/blobs/uploads/u1": Reply(201, hang=300),
            f"PATCH /v2/{REPO}/blobs/uploads/u1": Reply(202, hang=300),
        },
    )
    model = make_model(tmp_path, weights=2 * MB)
    code, output, took = run_skiff(
        "push",
        f"{silent.host}/{REPO}:v1",
        "-C",
        str(model),
        "--json",
        SKIFF_TIMEOUT="2",
        SKIFF_DEADLINE="6",
        timeout=120,
    )
    assert code == 5, output
    assert took < 60, took
    assert silent.host in output and "upload" in output, output


# -- answers are bounded ------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_a_huge_manifest_or_token_answer_is_refused_without_reading_it(
    servers: list[MisbehavingServer], declared: bool
) -> None:
    huge = Reply(
        200,
        b'{"a":1}',
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        size=256 * MB,
        declare_length=declared,
    )
    huge_error = Reply(404, b'{"errors":[]}', size=256 * MB, declare_length=declared)
    registry = serve(
        servers,
        {
            "GET /v2/": Reply(200, b"{}"),
            f"GET /v2/{REPO}/manifests/v1": huge,
            f"GET /v2/{REPO}/manifests/v2": huge_error,
        },
    )
    for tag in ("v1", "v2"):  # a manifest, an error document
        with client_for(registry.host) as client, pytest.raises(OversizedAnswer) as raised:
            client.get_manifest(tag)
        assert registry.host in raised.value.message
    assert registry.body_bytes_sent < 48 * MB, registry.body_bytes_sent

    tokens = serve(servers, {"GET /token": huge}, address="127.0.0.2")
    challenge = f'Bearer realm="{tokens.url}/token",service="registry"'
    bearer = serve(servers, fallback=Reply(401, b"{}", {"WWW-Authenticate": challenge}))
    with client_for(bearer.host) as client, pytest.raises(OversizedAnswer) as raised:
        client.send("GET", f"{client.base_url}/v2/", what="logging in")
    assert tokens.host in raised.value.message
    assert tokens.body_bytes_sent < 24 * MB, tokens.body_bytes_sent


def test_a_base_layer_served_larger_than_its_descriptor_stops_at_its_size(
    servers: list[MisbehavingServer], tmp_path: Path
) -> None:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {},
        }
    ).encode()
    layer = b"x" * 107
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(Digest.of(layer)),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    registry = serve(
        servers,
        {
            "GET /v2/": Reply(200, b"{}"),
            "GET /v2/base/hostile/manifests/1": Reply(
                200, manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            ),
            f"GET /v2/base/hostile/blobs/{Digest.of(config)}": Reply(200, config),
            f"GET /v2/base/hostile/blobs/{Digest.of(layer)}": Reply(
                200, layer, size=2048 * MB, declare_length=False
            ),
        },
    )
    cache = tmp_path / "cache"
    with pytest.raises(BuildFailed) as raised:
        pull_base(f"{registry.host}/base/hostile:1", Platform("linux", "amd64"), Layout.open(cache))
    assert "larger than 107 bytes" in raised.value.message, raised.value.message
    assert registry.body_bytes_sent < 24 * MB, registry.body_bytes_sent
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert written < 1 * MB, written


# -- the registry's word is checked ------------------------------------------------------------


def test_the_pinned_digest_is_the_manifest_skiff_sent_and_a_different_answer_fails_the_push(
    registry: RegistryServer, tmp_path: Path
) -> None:
    model = make_model(tmp_path)
    with FaultProxy(registry.host) as proxy:
        ok = run_skiff("push", f"{proxy.host}/{REPO}:v1", "-C", str(model), "--json")
        assert ok[0] == 0, ok[1]
        pinned = json.loads(LAST_STDOUT[0])["digest"]
        assert registry.tags(REPO) == {"v1": pinned}

        liar = {"Docker-Content-Digest": "sha256:" + "0" * 64}
        proxy.respond("PUT", f"/v2/{REPO}/manifests/", 201, liar)
        code, output, _ = run_skiff("push", f"{proxy.host}/{REPO}:v2", "-C", str(model))
    assert code == 5, output
    assert "sha256:" + "0" * 64 in output and pinned in output, output


def test_a_blob_whose_head_answers_another_size_is_uploaded(
    servers: list[MisbehavingServer],
) -> None:
    registry = serve(
        servers,
        {
            "GET /v2/": Reply(200, b"{}"),
            f"HEAD /v2/{REPO}/blobs/{BLOB_DIGEST}": Reply(200, size=5),
            f"POST /v2/{REPO}/blobs/uploads/": Reply(202, headers={"Location": "/up/u1"}),
            "PUT /up/u1": Reply(201),
        },
    )
    with client_for(registry.host) as client:
        result = push_blob(client, BlobSource(BLOB_DIGEST, len(BLOB), lambda: _bytes(BLOB)))
    assert result.outcome is Outcome.UPLOADED
    assert [s.method for s in registry.seen if s.path == "/up/u1"] == ["PUT"]


# -- what --debug prints -------------------------------------------------------------------------


def test_debug_output_never_shows_a_url_query(registry: RegistryServer, tmp_path: Path) -> None:
    """Upload locations carry the session's signed state (``_state=``), presigned storage URLs
    their signature: ``--debug`` prints the path and the parameters' names only."""
    model = make_model(tmp_path)
    code, output, _ = run_skiff("push", f"{registry.host}/{REPO}:v1", "-C", str(model), "--debug")
    assert code == 0, output
    assert "/blobs/uploads/" in output and "_state=..." in output, output  # logged, hidden
    leaked = re.findall(r"[?&](?:_state|digest)=(?!\.\.\.)[^&\s\"]+", output)
    assert leaked == [], leaked


# -- Ctrl-C leaves no upload session ------------------------------------------------------------


def test_ctrl_c_mid_upload_leaves_no_upload_session_in_the_registry(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """SIGINT to a real ``skiff push`` while a layer streams (a first push): the body in flight
    ends cleanly rather than breaking off, so the registry can delete its session (Distribution
    refuses to delete one whose body broke off midway); every session is then deleted. Counted
    in the registry's own storage: no ``_uploads/*/startedat`` left."""
    model = make_model(tmp_path, weights=160 * MB)
    uploads = registry.root / "docker/registry/v2/repositories" / REPO / "_uploads"
    with (
        Throttle(registry.host, rate=48 * MB) as link,
        subprocess.Popen(
            [str(SKIFF), "push", f"{link.host}/{REPO}:v1", "-C", str(model)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as process,
    ):
        try:
            deadline = time.monotonic() + 60
            while sum(d.stat().st_size for d in uploads.glob("*/data")) < 16 * MB:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.02)
            interrupted = time.monotonic()
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=10)
            took = time.monotonic() - interrupted
        finally:
            if process.poll() is None:
                process.kill()
        _, stderr = process.communicate()
    assert code == 130, stderr
    assert took < 1.5, took
    assert "Traceback" not in stderr
    left = sorted(started.parent.name for started in uploads.glob("*/startedat"))
    assert left == [], left
    assert registry.manifests(REPO) == []
