"""A push that fails while an upload is stuck on a hung link exits with its error at once,
instead of waiting for the stuck upload to time out."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hardutil import MB, SKIFF, make_model
from test_interrupt import STOP_SIGNALS, build_in_background, interrupt, wait_for_upload
from throttle import Throttle

from skiff.errors import UploadFailed
from skiff.push import push
from support import RegistryServer
from support.faultproxy import FaultProxy

REPO = "demo/failing"


class _HeldIndex(http.server.ThreadingHTTPServer):
    """A package index on 127.0.0.1 that holds every request until ``release`` is set, then
    answers 404: a dependency install that fails when the test says so."""

    daemon_threads = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Event()
        super().__init__(("127.0.0.1", 0), _HeldHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/simple"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # uv ended (as the tests intend) before its answer: a broken pipe, nothing more


class _HeldHandler(http.server.BaseHTTPRequestHandler):
    server: _HeldIndex

    def do_GET(self) -> None:
        self.server.asked.set()
        self.server.release.wait(120)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def held_index() -> Iterator[_HeldIndex]:
    index = _HeldIndex()
    thread = threading.Thread(target=index.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        index.release.set()
        index.shutdown()
        index.server_close()


PACKAGE = "skiff-test-no-such-package==1.0"


def model_needing_a_held_package(
    parent: Path, index: _HeldIndex, weights: int = 0, requirements_file: bool = False
) -> tuple[Path, dict[str, str]]:
    """A model whose one Python package is asked of ``index`` (listed in cog.yaml, or in a
    requirements file), and the environment that points uv (and a cache of its own) there."""
    model = make_model(parent, weights=weights)
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    if requirements_file:
        (model / "requirements.txt").write_text(PACKAGE + "\n")
        spec["build"]["python_requirements"] = "requirements.txt"
    else:
        spec["build"]["python_packages"] = [PACKAGE]
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    env = dict(
        os.environ,
        UV_INDEX_URL=index.url,
        UV_CACHE_DIR=str(parent / "uv-cache"),
        SKIFF_CACHE_DIR=str(parent / "cache"),
    )
    return model, env


def test_a_build_failure_while_an_upload_hangs_exits_4_at_once(
    tmp_path: Path, registry: RegistryServer, held_index: _HeldIndex
) -> None:
    model, env = model_needing_a_held_package(tmp_path, held_index, weights=64 * MB)
    with Throttle(registry.host, rate=8 * MB) as link:
        command = [str(SKIFF), "push", f"{link.host}/{REPO}:v1", "-C", str(model)]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as process:
            try:
                # The weights are going up, and uv is waiting for the index.
                wait_for_upload(registry, REPO, process)
                assert held_index.asked.wait(30), "uv never asked the index"
                link.stall(600)  # the link hangs: the upload blocks in a send
                time.sleep(0.5)
                failed_at = time.monotonic()
                held_index.release.set()  # and now the dependency install fails
                process.wait(timeout=60)
                took = time.monotonic() - failed_at
            finally:
                if process.poll() is None:
                    process.kill()
            stdout, stderr = process.communicate()
    assert process.returncode == 4, stdout + stderr
    assert "uv could not install the Python packages" in stderr
    assert "Traceback" not in stderr
    # uv's own failure, the error, and at most a short wait for the stuck upload's thread
    # (the link would have held it until its 300 s timeout).
    assert took < 10, f"exited {took:.1f} s after the build failed"
    assert registry.manifests(REPO) == []


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_dependencies_install_exits_at_once_and_ends_uv(
    tmp_path: Path, registry: RegistryServer, held_index: _HeldIndex, signum: int
) -> None:
    """The dependency install runs beside the other layers; Ctrl-C (or a process manager's
    SIGTERM, or a closed terminal's SIGHUP) does not wait for it, and leaves neither uv running
    nor skiff's copy of the requirements in the model folder (where it would end up in the next
    image), nor a temporary blob in the cache. The signal goes to skiff alone, as a CI runner
    may send it: at a terminal, uv would get it too."""
    model, env = model_needing_a_held_package(tmp_path, held_index, requirements_file=True)
    before = sorted(p.name for p in model.iterdir())
    with build_in_background(model, env) as process:
        assert held_index.asked.wait(60), "uv never asked the index"
        code, took = interrupt(process, signum=signum)
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert code == 128 + signum, stderr
    assert took < 1.0, f"exited {took:.1f} s after the signal"
    name = signal.Signals(signum).name
    assert stderr.splitlines()[-1] == (
        "interrupted" if signum == signal.SIGINT else f"interrupted by {name}"
    )
    assert sorted(p.name for p in model.iterdir()) == before
    assert not processes_mentioning(str(model)), "uv is still running"
    blobs = Path(env["SKIFF_CACHE_DIR"]) / "oci" / "blobs" / "sha256"
    assert not list(blobs.glob(".ingest-*")), "a temporary blob was left in the cache"


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return found


def test_a_refusal_for_good_cancels_the_other_uploads_instead_of_waiting_for_them(
    tmp_path: Path, registry: RegistryServer
) -> None:
    """The small blobs are refused (413, as a proxy's body limit answers) while the weights go
    up a slow link: the push fails as soon as the refusal is known, not when the weights are
    done."""
    model = make_model(tmp_path, weights=40 * MB)
    with Throttle(registry.host, rate=2 * MB) as slow, FaultProxy(slow.host) as proxy:
        proxy.respond("PUT", "/blobs/uploads/", 413, max_body=1 * MB, times=1000)
        started = time.monotonic()
        with pytest.raises(UploadFailed) as failed:
            push(model, f"{proxy.host}/{REPO}:v1")
        took = time.monotonic() - started
    assert "HTTP 413" in failed.value.message
    assert failed.value.hint is not None and "cached" in failed.value.hint
    # The weights alone need 20 s on this link; the refusal comes within the first seconds.
    assert took < 10, f"failed after {took:.1f} s"
    assert registry.manifests(REPO) == []


def test_a_refusal_for_good_stops_the_build_too(
    tmp_path: Path, registry: RegistryServer, held_index: _HeldIndex
) -> None:
    """The registry refuses the first blobs while the dependencies still install (here, an
    install that would never end): the push fails at once instead of waiting for the build."""
    model, env = model_needing_a_held_package(tmp_path, held_index)
    with FaultProxy(registry.host) as proxy:
        proxy.respond("PUT", "/blobs/uploads/", 413, max_body=1 * MB, times=1000)
        command = [str(SKIFF), "push", f"{proxy.host}/{REPO}:v1", "-C", str(model)]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as process:
            try:
                code = process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
            _, stderr = process.communicate()
    assert code == 5, stderr
    assert "HTTP 413" in stderr
    assert "refused it for good" in stderr
    assert "Traceback" not in stderr
