"""Pushing through a faulty network: a fault-injecting proxy between skiff and a real registry.

The registry must never hold a manifest whose blobs are missing; a push either completes or
fails with exit 5 and the reason, and a rerun sends only what had not arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from skiff.errors import UploadFailed
from skiff.push import PushOptions, PushResult, push
from skiff.registry import upload
from support import USERS, DockerConfig, RegistryServer, TokenIssuer, push_tiny_image
from support.faultproxy import FaultProxy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"
SKIFF = Path(sys.executable).parent / "skiff"
MB = 1024 * 1024
UPLOADS = r"/blobs/uploads/"
REPO = "demo/faulty"


@pytest.fixture
def registry(plain_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> RegistryServer:
    # The base is pulled straight from the registry: the faults are for the push.
    push_tiny_image(plain_registry, "base/tiny", "1")
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{plain_registry.host}/base/tiny:1")
    return plain_registry


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as faulty:
        yield faulty


def model_with_weights(parent: Path, size: int) -> Path:
    model = parent / "hello"
    shutil.copytree(EXAMPLE, model)
    (model / "weights" / "big.bin").write_bytes(os.urandom(size))
    return model


def assert_complete(registry: RegistryServer, repo: str) -> None:
    """Every manifest in ``repo`` has its config and layers in the registry, intact."""
    manifests = registry.manifests(repo)
    assert manifests
    linked = set(registry.layers(repo))
    for digest in manifests:
        manifest = json.loads(registry.blob_bytes(digest))
        for blob in (manifest["config"], *manifest["layers"]):
            assert blob["digest"] in linked, f"{blob['digest']} is missing from {repo}"
            assert len(registry.blob_bytes(blob["digest"])) == blob["size"]


def outcomes(result: PushResult) -> dict[str, str]:
    return {str(layer.digest): str(layer.outcome) for layer in result.layers}


def test_a_connection_reset_mid_chunk_is_resumed_and_the_push_completes(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 24 * MB)
    # The second chunk of the big blob breaks off after 3 MB reached the registry.
    fault = proxy.reset("PATCH", UPLOADS, after_body_bytes=3 * MB, skip=1)
    result = push(model, f"{proxy.host}/{REPO}:v1", PushOptions(chunk_size=8 * MB))

    assert fault.fired == 1
    assert [entry.outcome for entry in proxy.requests("PATCH")].count("reset") == 1
    assert registry.tags(REPO) == {"v1": str(result.digest)}
    assert_complete(registry, REPO)
    weights = [layer for layer in result.layers if layer.role == "weights"]
    assert any(layer.size > 24 * MB for layer in weights)
    assert all(layer.outcome == "uploaded" for layer in weights)


def test_503_and_429_with_retry_after_are_waited_out(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 12 * MB)
    retry_after = {"Retry-After": "1"}
    proxy.respond("HEAD", r"/blobs/sha256:", 503, retry_after)
    proxy.respond("PATCH", UPLOADS, 503, retry_after, skip=1)
    proxy.respond("POST", UPLOADS, 429, retry_after, skip=1)  # the first POST is preflight's
    proxy.respond("PUT", r"/manifests/", 502)
    result = push(model, f"{proxy.host}/{REPO}:v1", PushOptions(chunk_size=4 * MB))

    injected = [entry for entry in proxy.log if entry.outcome.startswith("injected")]
    assert sorted(entry.outcome for entry in injected) == [
        "injected 429", "injected 502", "injected 503", "injected 503",
    ]  # fmt: skip
    for entry in injected:
        if entry.method not in ("HEAD", "PATCH"):
            continue  # every blob's POST has the same target: a retry cannot be told apart
        # The same request came again, and not before the registry said it could.
        later = [
            e for e in proxy.log if e.target == entry.target and e.method == entry.method
            and e.at > entry.at
        ]  # fmt: skip
        assert later, f"{entry.method} {entry.target} was not retried"
        assert later[0].at - entry.at >= 0.9
    assert registry.tags(REPO) == {"v1": str(result.digest)}
    assert_complete(registry, REPO)


def skiff_push(ref: str, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SKIFF), "push", ref, "-C", str(model), "--json"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip


def test_a_link_that_keeps_breaking_exits_5_and_a_rerun_sends_only_what_is_missing(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    # 40 MB of weights: more than one chunk at the default chunk size; every chunk breaks.
    model = model_with_weights(tmp_path, 40 * MB)
    proxy.reset("PATCH", UPLOADS, after_body_bytes=1 * MB, times=1000)
    ref = f"{proxy.host}/{REPO}:v1"
    failed = skiff_push(ref, model)
    assert failed.returncode == 5, failed.stdout + failed.stderr
    error: dict[str, Any] = json.loads(failed.stdout)
    assert error["ok"] is False
    assert f"upload to {proxy.host}/{REPO} failed" in error["error"], error
    assert "cached" in (error["hint"] or "")
    # No manifest, no tag: nothing in the registry points at a blob that is not there.
    assert registry.manifests(REPO) == []
    assert registry.tags(REPO) == {}
    arrived = set(registry.layers(REPO))
    assert arrived  # the small blobs went up beside the broken one

    proxy.disarm()
    mark = len(proxy.log)
    done = skiff_push(ref, model)
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    for layer in summary["layers"]:
        if layer["digest"] in arrived:
            assert layer["status"] == "skipped" and layer["bytes_uploaded"] == 0
    sent = {layer["digest"]: layer for layer in summary["layers"] if layer["status"] == "uploaded"}
    assert "weights" in {layer["role"] for layer in sent.values()}
    assert summary["bytes_uploaded"] == sum(layer["size"] for layer in sent.values())
    # On the wire: uploads only for blobs that had not arrived. (Not "only the weights": the
    # runtime layer is skiff's own source, which may be edited between the two pushes.)
    committed = {
        parse_qs(urlsplit(e.target).query)["digest"][0]
        for e in proxy.log[mark:]
        if e.method == "PUT" and "digest=" in e.target
    }
    assert committed == set(sent) and not committed & arrived
    assert registry.tags(REPO) == {"v1": summary["digest"]}
    assert_complete(registry, REPO)


def test_a_whole_blob_put_that_breaks_off_is_sent_again(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 4 * MB)  # with table.bin, under 8 MiB: one PUT
    fault = proxy.reset("PUT", r"digest=", after_body_bytes=2 * MB, min_body=MB)
    result = push(model, f"{proxy.host}/{REPO}:v1")
    assert fault.fired == 1
    assert registry.tags(REPO) == {"v1": str(result.digest)}
    assert_complete(registry, REPO)


def test_a_streamed_blob_that_breaks_off_is_sent_again(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    # A repository with a tag: its layers go up once built, each in one streamed PATCH.
    push_tiny_image(registry, REPO, "old")
    model = model_with_weights(tmp_path, 12 * MB)
    fault = proxy.reset("PATCH", UPLOADS, after_body_bytes=2 * MB, min_body=MB)
    result = push(model, f"{proxy.host}/{REPO}:v1")
    assert fault.fired == 1
    patches = [e for e in proxy.log if e.method == "PATCH"]
    assert len(patches) == 2  # the broken one, then the whole blob again in a new session
    assert registry.tags(REPO)["v1"] == str(result.digest)
    assert_complete(registry, REPO)


def test_lost_answers_to_a_chunk_and_to_the_commit_do_not_fail_the_push(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 12 * MB)
    # The registry stores the second chunk, then the closing PUT, but skiff hears neither.
    chunk = proxy.lose_response("PATCH", UPLOADS, skip=1)
    commit = proxy.lose_response("PUT", r"digest=", max_body=0)
    result = push(model, f"{proxy.host}/{REPO}:v1", PushOptions(chunk_size=4 * MB))
    assert (chunk.fired, commit.fired) == (1, 1)
    assert registry.tags(REPO) == {"v1": str(result.digest)}
    assert_complete(registry, REPO)


def test_a_401_mid_upload_gets_a_new_token_and_the_upload_goes_on(
    tmp_path: Path,
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    docker_config: DockerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultProxy(token_registry.host) as proxy:
        for host in (token_registry.host, proxy.host):
            docker_config.write_auth(host, "alice", USERS["alice"])
        push_tiny_image(token_registry, "alice/base", "1", user="alice", password=USERS["alice"])
        monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{token_registry.host}/alice/base:1")
        model = model_with_weights(tmp_path, 12 * MB)
        # What a registry says when the token expired between two chunks.
        challenge = (
            f'Bearer realm="{token_issuer.realm}",service="{token_issuer.service}",'
            'scope="repository:alice/model:pull,push",error="invalid_token"'
        )
        asked_before: list[int] = []
        expired = proxy.respond(
            "PATCH", UPLOADS, 401, {"WWW-Authenticate": challenge}, skip=1,
            on_fire=lambda: asked_before.append(len(token_issuer.requests)),
        )  # fmt: skip
        result = push(model, f"{proxy.host}/alice/model:v1", PushOptions(chunk_size=4 * MB))
    assert expired.fired == 1
    # A new token for the repository was asked for after the 401, and the chunk went through.
    later = token_issuer.requests[asked_before[0] :]
    assert any("repository:alice/model:push,pull" in r.scopes and r.status == 200 for r in later)
    (rejected,) = proxy.requests("PATCH", UPLOADS + ".*")[1:2]
    assert rejected.outcome == "injected 401"
    retried = [e for e in proxy.log if e.target == rejected.target and e.at > rejected.at]
    assert retried and retried[0].outcome == "202"
    assert token_registry.tags("alice/model") == {"v1": str(result.digest)}
    assert_complete(token_registry, "alice/model")


def test_a_refusal_is_not_retried_and_fails_with_the_registrys_answer(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    model = model_with_weights(tmp_path, 12 * MB)
    proxy.respond("PATCH", UPLOADS, 413, times=1000)  # e.g. a proxy's body size limit
    with pytest.raises(UploadFailed) as failed:
        push(model, f"{proxy.host}/{REPO}:v1", PushOptions(chunk_size=4 * MB))
    assert "HTTP 413" in failed.value.message
    assert failed.value.hint is not None and "cached" in failed.value.hint
    assert len(proxy.requests("PATCH")) == 1  # asked once: retrying cannot change the answer
    assert registry.manifests(REPO) == []


def test_a_chunk_that_breaks_in_every_new_session_is_not_retried_forever(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy
) -> None:
    """Distribution drops a session whose chunk broke off, so the upload starts again from zero;
    the first chunk then goes through again, which is not progress: the retry budget holds."""
    model = model_with_weights(tmp_path, 12 * MB)
    # Cog's runtime layer spans several chunks too (coglet's wheel is a few MB): pushed first,
    # without the proxy, so that the weights are the one blob the faults meet.
    shutil.copytree(EXAMPLE, tmp_path / "warm")
    push(tmp_path / "warm", f"{registry.host}/{REPO}:warm", PushOptions(chunk_size=4 * MB))
    fired = 0

    def arm() -> None:
        # The second chunk of each session breaks (the first PATCH of a session is let through).
        fault = proxy.reset("PATCH", UPLOADS, after_body_bytes=1 * MB, skip=1)
        fault.on_fire = refire

    def refire() -> None:
        nonlocal fired
        fired += 1
        if fired < 20:  # bounded, so that the old behaviour fails this test instead of hanging
            arm()

    arm()
    with pytest.raises(UploadFailed):
        push(model, f"{proxy.host}/{REPO}:v1", PushOptions(chunk_size=4 * MB))
    assert fired == upload.RESUME_ATTEMPTS + 1
    assert set(registry.tags(REPO)) == {"warm"}


class _RemovesTheWeightsBlob:
    """Push events that delete the weights layer's cached blob as its upload starts (as if the
    cache were cleaned by hand, or by another tool, in the middle of a push)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.removed: list[str] = []

    def check(self, result: Any) -> None: ...
    def status(self, text: str) -> None: ...
    def blob_progress(self, key: object, done: int) -> None: ...
    def blob_finished(self, key: object, result: Any, role: str) -> None: ...

    def blob_started(self, key: object, size: int | None, role: str) -> None:
        if role == "weights" and size is not None:
            (self.cache / "oci" / "blobs" / "sha256" / str(key).split(":")[1]).unlink()
            self.removed.append(str(key))


def test_a_cached_blob_removed_during_the_push_fails_it_with_exit_5_not_a_crash(
    tmp_path: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SKIFF_CACHE_DIR", str(cache))
    model = model_with_weights(tmp_path, 12 * MB)
    events = _RemovesTheWeightsBlob(cache)
    ref = f"{registry.host}/{REPO}:v1"
    with pytest.raises(UploadFailed) as failed:
        # Chunks asked for: the weights go up from the cache once built (not streamed).
        push(model, ref, PushOptions(chunk_size=4 * MB), events=events)
    assert events.removed
    assert f"cannot read {events.removed[0]} from the cache" in failed.value.message
    assert failed.value.hint is not None and "push again" in failed.value.hint
    assert registry.manifests(REPO) == []
    # As the hint says: the next push builds the missing layer again and completes.
    done = push(model, ref)
    assert registry.tags(REPO) == {"v1": str(done.digest)}
    assert_complete(registry, REPO)
