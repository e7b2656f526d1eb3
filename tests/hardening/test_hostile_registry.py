"""Hostile registries, fuzzed: every answer of the conversation (status, headers, body) is drawn
by hypothesis, during `check` and during `push`. Whatever comes back, skiff ends with a typed
error that maps to a documented exit code (2-5), or succeeds; never a traceback, never exit 1.

(References and cog.yaml are fuzzed in tests/test_reference.py and tests/test_config.py;
challenge headers in tests/test_challenge.py.)
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hardutil import MB, make_model
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from skiff.cli import exit_code
from skiff.errors import SkiffError
from skiff.preflight import run_preflight
from skiff.push import PushOptions, push
from skiff.registry import upload
from skiff.registry.transport import TransportOptions
from support import RegistryServer
from support.misbehaving import MisbehavingServer, Reply, Seen

# Text without ':' or '/' can never name another host: the fuzz stays on 127.0.0.1.
_LOCAL_TEXT = st.text(st.characters(blacklist_characters=":/\r\n\x00"), max_size=30)
_DIGEST = "sha256:" + "ab" * 32

_HEADERS: dict[str, st.SearchStrategy[str]] = {
    "WWW-Authenticate": st.one_of(
        st.sampled_from(
            [
                'Bearer realm="{base}/token",service="fuzz",scope="repository:demo/fuzz:pull,push"',
                'Bearer realm="{base}/token",error="invalid_token"',
                'Basic realm="fuzz"',
                "Bearer",
                'Bearer realm=""',
                "Negotiate abc",
                'Bearer realm="{base}/token", Basic realm="x"',
            ]
        ),
        _LOCAL_TEXT,
    ),
    "Location": st.one_of(
        st.sampled_from(
            [
                "{base}/v2/demo/fuzz/blobs/uploads/u1?_state=s",
                "/v2/demo/fuzz/blobs/uploads/u2",
                "{base}/v2/",
                "",
                "http://[::1",
                "{base}/%zz",
            ]
        ),
        _LOCAL_TEXT,
    ),
    "Range": st.one_of(
        st.sampled_from(["0-0", "0-1048575", "bytes=0-5", "-", "5-2", "0-99999999999999999999"]),
        _LOCAL_TEXT,
    ),
    "Docker-Content-Digest": st.one_of(
        st.sampled_from([_DIGEST, "sha256:zz", "md5:abc", ""]), _LOCAL_TEXT
    ),
    "Retry-After": st.sampled_from(["0", "1", "-1", "abc", "Wed, 21 Oct 2015 07:28:00 GMT"]),
    "Content-Type": st.sampled_from(
        ["application/json", "text/html", "application/vnd.oci.image.manifest.v1+json"]
    ),
    "Docker-Distribution-API-Version": st.sampled_from(["registry/2.0", "registry/1.0", ""]),
}

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _LOCAL_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_LOCAL_TEXT, inner, max_size=3),
    max_leaves=8,
)
_BODIES = st.one_of(
    st.sampled_from(
        [
            "",
            '{"errors":[{"code":"DENIED","message":"no"}]}',
            '{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}',
            '{"errors":"x"}',
            '{"errors":[{"code":null,"detail":{"a":[1]}}]}',
            '{"token":5}',
            '{"token":"a.b.c","expires_in":"soon"}',
            '{"token":"x","access_token":"y","expires_in":-5}',
            "<html>502 Bad Gateway</html>",
        ]
    ),
    _JSON.map(json.dumps),
    st.binary(max_size=120),
)
_STATUSES = st.one_of(
    st.sampled_from([200, 201, 202, 204, 301, 307, 400, 401, 403, 404, 405, 416, 429, 500, 503]),
    st.integers(200, 599),  # no 1xx: it is not a final answer, the client would wait on
)
_REPLIES = st.builds(
    Reply,
    status=_STATUSES,
    body=_BODIES,
    headers=st.lists(
        st.sampled_from(sorted(_HEADERS)).flatmap(lambda n: st.tuples(st.just(n), _HEADERS[n])),
        max_size=3,
    ).map(dict),
)


class Script:
    """Answers the n-th request with the n-th reply, round and round."""

    def __init__(self, replies: list[Reply]) -> None:
        self._replies = itertools.cycle(replies)
        self._lock = threading.Lock()

    def __call__(self, seen: Seen) -> Reply:
        with self._lock:
            return next(self._replies)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> TransportOptions:
    """No waiting between retries, and no honouring of long Retry-After: many examples, fast."""
    original = TransportOptions.from_env.__func__  # type: ignore[attr-defined]

    def from_env(cls: type[TransportOptions], **overrides: Any) -> TransportOptions:
        options: TransportOptions = original(cls, **overrides)
        return replace(options, backoff=0.0, max_retry_delay=0.0, read_timeout=5.0)

    monkeypatch.setattr(TransportOptions, "from_env", classmethod(from_env))
    monkeypatch.setattr(upload, "_backoff", lambda failures: 0.0)
    return TransportOptions.from_env()


def assert_typed(error: SkiffError) -> None:
    assert exit_code(error) in (2, 3, 4, 5), f"exit 1 for {type(error).__name__}: {error}"
    assert error.message and "Traceback" not in error.message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(replies=st.lists(_REPLIES, min_size=1, max_size=6))
def test_check_against_any_answers_gives_a_report(
    fast: TransportOptions, replies: list[Reply]
) -> None:
    with MisbehavingServer(fallback=Script(replies)) as server:  # type: ignore[arg-type]
        report = run_preflight(f"{server.host}/demo/fuzz:v1", options=fast)
    failure = report.failure
    event(failure.name if failure else "passed")
    if failure is not None:
        assert failure.message and failure.name


class FirstThen:
    """A sane answer to the first request (preflight's probe), then the script's."""

    def __init__(self, first: Reply, then: Script) -> None:
        self.first: Reply | None = first
        self.then = then

    def __call__(self, seen: Seen) -> Reply:
        first, self.first = self.first, None
        return first if first is not None else self.then(seen)


def passing_preflight(script: Script) -> dict[str, Any]:
    """Routes that let preflight pass, so that the script answers the push's own requests."""
    uploads = "/v2/demo/fuzz/blobs/uploads/"
    probe = Reply(202, headers={"Location": "{base}" + uploads + "probe"})
    return {
        "GET /v2/": Reply(200, "{}"),
        "HEAD /v2/demo/fuzz/manifests/v1": Reply(404),
        f"POST {uploads}": FirstThen(probe, script),
        f"DELETE {uploads}probe": Reply(204),
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(replies=st.lists(_REPLIES, min_size=1, max_size=8))
def test_push_against_any_answers_fails_typed_or_succeeds(
    fast: TransportOptions, registry: RegistryServer, tmp_path: Path, replies: list[Reply]
) -> None:
    model = tmp_path / "hello"
    if not model.exists():
        make_model(tmp_path)
    script = Script(replies)
    with MisbehavingServer(passing_preflight(script), fallback=script) as server:  # type: ignore[arg-type]
        try:
            push(model, f"{server.host}/demo/fuzz:v1", PushOptions(chunk_size=1 * MB))
            event("pushed")
        except SkiffError as error:
            assert_typed(error)
            event(f"{type(error).__name__}: {error.message.split(':')[0][:40]}")
