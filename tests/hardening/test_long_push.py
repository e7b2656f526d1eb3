"""A push that outlives its token, and a push during which the registry restarts.

Both are slowed down on purpose (a progress callback that sleeps between chunks), so the fault
lands in the middle of the weights' upload and not before or after it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hardutil import MB, assert_complete, make_model, open_sessions
from throttle import Throttle

from skiff.push import PushOptions, QuietEvents, push
from support import USERS, DockerConfig, RegistryServer, TokenIssuer, push_tiny_image
from support.faultproxy import FaultProxy

UPLOADS = r"/blobs/uploads/"
# Distribution accepts a token up to this long after its `exp` (clock skew leeway).
REGISTRY_LEEWAY = 60


class SlowChunks(QuietEvents):
    """Sleeps after each piece of a large blob (a slow link), and runs ``at_bytes`` once when
    that many bytes of it went up."""

    def __init__(self, pause: float, at_bytes: int = 0, action: Any = None) -> None:
        self.pause = pause
        self.at_bytes = at_bytes
        self.action = action
        self.fired = threading.Event()
        self.sizes: dict[object, int] = {}

    def blob_started(self, key: object, size: int | None, role: str) -> None:
        self.sizes[key] = size or 0

    def blob_progress(self, key: object, done: int) -> None:
        if self.sizes.get(key, 0) < 4 * MB:
            return
        if self.action is not None and done >= self.at_bytes and not self.fired.is_set():
            self.fired.set()
            self.action()
        time.sleep(self.pause)


def test_tokens_that_expire_during_a_long_upload_are_renewed_and_the_push_completes(
    tmp_path: Path,
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    docker_config: DockerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    push_tiny_image(token_registry, "alice/base", "1", user="alice", password=USERS["alice"])
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{token_registry.host}/alice/base:1")
    model = make_model(tmp_path, weights=10 * MB)
    # The token server says "300 s" (so skiff has no reason to renew early), but signs tokens
    # the registry refuses after ~1.5 s: each expires for real during the upload.
    valid_for = 1.5
    mint = token_issuer.mint

    def short_lived(user: str | None, access: Any, **kw: Any) -> str:
        issued_at = time.time() + valid_for - REGISTRY_LEEWAY - token_issuer.lifetime
        return mint(user, access, issued_at=issued_at)

    monkeypatch.setattr(token_issuer, "mint", short_lived)
    with FaultProxy(token_registry.host) as proxy:  # relays only: it shows the 401s
        docker_config.write_auth(proxy.host, "alice", USERS["alice"])
        docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
        result = push(
            model, f"{proxy.host}/alice/model:v1", PushOptions(chunk_size=1 * MB),
            events=SlowChunks(pause=0.4),
        )  # fmt: skip
        patches = proxy.requests("PATCH", UPLOADS)
    refused = [entry for entry in patches if entry.outcome == "401"]
    assert refused, "no token expired during the upload: the test proves nothing"
    # Every refused chunk was sent again with a new token and accepted (on a loaded machine a
    # renewed token can expire again before its chunk arrives: then it is renewed once more).
    for entry in refused:
        again = [e for e in patches if e.target == entry.target and e.at > entry.at]
        assert any(e.outcome == "202" for e in again)
    assert token_issuer.tokens_issued > 1 + len(refused) // 2
    assert token_registry.tags("alice/model") == {"v1": str(result.digest)}
    assert_complete(token_registry, "alice/model")


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_a_registry_restarted_mid_upload_is_waited_for_and_the_push_completes(
    tmp_path: Path, registry: RegistryServer, how: str
) -> None:
    """The upload's retries (about 12 s of backoff) outlast a restart (under 1 s): the push
    resumes in the same upload session, which the registry kept on disk, and completes."""
    model = make_model(tmp_path, weights=12 * MB)
    repo = "demo/restarted"
    errors: list[BaseException] = []
    back_at: list[float] = []
    test_over = threading.Event()

    def bounce() -> None:
        try:
            if how == "restart":
                registry.restart()  # SIGTERM, then the same port, storage and upload secret
            else:
                registry.kill()  # SIGKILL: a crash
                registry.start()
            back_at.append(time.monotonic())
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        # The registry dies with the thread that started it (PR_SET_PDEATHSIG is per thread):
        # this one lives until the test is over.
        test_over.wait(timeout=120)

    worker = threading.Thread(target=bounce)
    events = SlowChunks(pause=0.15, at_bytes=4 * MB, action=worker.start)
    try:
        result = push(
            model, f"{registry.host}/{repo}:v1", PushOptions(chunk_size=1 * MB), events=events
        )
        finished_at = time.monotonic()
        assert registry.running  # the one started again, mid-push
    finally:
        test_over.set()
        if worker.is_alive() or events.fired.is_set():
            worker.join(timeout=30)
    assert not errors, f"{errors}: {registry.log_tail()}"
    assert events.fired.is_set() and back_at and back_at[0] < finished_at
    assert registry.tags(repo) == {"v1": str(result.digest)}
    assert_complete(registry, repo)
    weights = [layer for layer in result.layers if layer.role == "weights" and layer.size > 4 * MB]
    assert weights and weights[0].outcome == "uploaded"


def test_a_link_that_hangs_for_seconds_mid_upload_is_waited_for_and_the_push_completes(
    tmp_path: Path, registry: RegistryServer
) -> None:
    """A stall shorter than the upload timeouts (300 s) is not a failure: nothing is retried."""
    model = make_model(tmp_path, weights=8 * MB)
    repo = "demo/stalled"
    with Throttle(registry.host, rate=None) as link:
        events = SlowChunks(pause=0.0, at_bytes=3 * MB, action=lambda: link.stall(3.0))
        started = time.monotonic()
        result = push(
            model, f"{link.host}/{repo}:v1", PushOptions(chunk_size=1 * MB), events=events
        )
        took = time.monotonic() - started
    assert events.fired.is_set() and took >= 3.0
    assert registry.tags(repo) == {"v1": str(result.digest)}
    assert_complete(registry, repo)
    assert open_sessions(registry, repo) == []  # no chunk was abandoned and re-sent elsewhere
