"""Ctrl-C, SIGTERM or SIGHUP in the middle of an upload: ``skiff push`` exits 130, 143 or 129 at
once with a one-line message (and with ``--json``, one JSON document), the registry is told to
forget the upload sessions, and the next push completes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hardutil import MB, SKIFF, assert_complete, make_model, open_sessions, skiff
from throttle import Throttle

from support import RegistryServer
from support.faultproxy import FaultProxy

REPO = "demo/interrupted"


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def default_sigint() -> None:
    """Runs in the child: a shell runs background jobs with SIGINT ignored, which the child
    would inherit; Ctrl-C at a terminal finds the default disposition (and so do a process
    manager's SIGTERM and a closed terminal's SIGHUP, whatever the test runner was started
    with)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


@contextmanager
def build_in_background(model: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``skiff build`` as Ctrl-C at a terminal would find it; killed if the test leaves early."""
    with subprocess.Popen(
        [str(SKIFF), "build", "-C", str(model)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def interrupt(
    process: subprocess.Popen[str], timeout: float = 30, signum: int = signal.SIGINT
) -> tuple[int, float]:
    """Ctrl-C (or ``signum``) to ``process``: its exit code, and how long it took to exit after
    the signal."""
    interrupted = time.monotonic()
    process.send_signal(signum)
    code = process.wait(timeout=timeout)
    return code, time.monotonic() - interrupted


def wait_for_upload(
    registry: RegistryServer, repo: str, process: subprocess.Popen[str], at_least: int = 2 * MB
) -> None:
    """Returns once ``at_least`` bytes of an upload to ``repo`` have reached the registry."""
    deadline = time.monotonic() + 60
    while bytes_in_open_uploads(registry, repo) < at_least:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.02)


def bytes_in_open_uploads(registry: RegistryServer, repo: str) -> int:
    base = registry.root / "docker/registry/v2/repositories" / repo / "_uploads"
    return sum(data.stat().st_size for data in base.glob("*/data") if data.exists())


def assert_told(signum: int, stdout: str, stderr: str) -> None:
    """One line on stderr says what stopped the command; stdout is one JSON document saying it
    failed."""
    name = signal.Signals(signum).name
    expected = "interrupted" if signum == signal.SIGINT else f"interrupted by {name}"
    assert stderr.splitlines()[-1] == expected, stderr
    assert "Traceback" not in stderr
    document = json.loads(stdout)  # exactly one document, or this raises
    assert document["ok"] is False and document["signal"] == name, document


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_upload_exits_within_a_second_and_cancels_the_sessions(
    tmp_path: Path, registry: RegistryServer, signum: int
) -> None:
    model = make_model(tmp_path, weights=64 * MB)
    # skiff -> fault proxy (a log of every request) -> a slow link (8 MB/s) -> the registry
    with Throttle(registry.host, rate=8 * MB) as slow, FaultProxy(slow.host) as proxy:
        ref = f"{proxy.host}/{REPO}:v1"
        command = [str(SKIFF), "push", ref, "-C", str(model), "--json"]
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=default_sigint,
        ) as process:
            try:
                wait_for_upload(registry, REPO, process)
                _, took = interrupt(process, timeout=10, signum=signum)
            finally:
                if process.poll() is None:
                    process.kill()
            stdout, stderr = process.communicate()
        assert process.returncode == 128 + signum, stdout + stderr
        assert took < 1.0, f"exited {took:.2f} s after the signal"
        assert_told(signum, stdout, stderr)
        deletes = [e.target for e in proxy.requests("DELETE", "/blobs/uploads/")]
    # Every session still open in the registry was cancelled (DELETE) by the push. Distribution
    # refuses to drop the one whose chunk was still arriving (its state is behind the bytes
    # already in flight): its purger removes such leftovers; no client can do more.
    left = open_sessions(registry, REPO)
    assert left, "no upload was in progress: the test proves nothing"
    for session in left:
        assert any(f"/uploads/{session}?" in target for target in deletes), (session, deletes)
    assert registry.manifests(REPO) == []

    # The next push (full speed, straight to the registry) completes.
    done = skiff("push", f"{registry.host}/{REPO}:v1", "-C", str(model), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert registry.tags(REPO) == {"v1": summary["digest"]}
    assert_complete(registry, REPO)
    assert open_sessions(registry, REPO) == left  # the rerun left no session of its own


def blobs_being_written(cache: Path) -> list[Path]:
    """Temporary blobs in the cache that have some bytes already."""
    found = []
    for tmp in (cache / "oci" / "blobs" / "sha256").glob(".ingest-*"):
        try:
            if tmp.stat().st_size:
                found.append(tmp)
        except FileNotFoundError:  # committed or removed meanwhile
            pass
    return found


@pytest.mark.parametrize("signum", STOP_SIGNALS[:2], ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_weights_layers_are_built_side_by_side_exits_at_once(
    tmp_path: Path, registry: RegistryServer, signum: int
) -> None:
    """Three large weights files are written into the cache at once; Ctrl-C (or SIGTERM) does
    not wait for them to finish, and leaves the cache whole: no blob under its digest name holds
    other bytes, and the next build removes the partial ones and completes."""
    model = make_model(tmp_path, weights=0)
    for name in ("a.bin", "b.bin", "c.bin"):
        with (model / "weights" / name).open("wb") as f:
            f.truncate(1024 * MB)  # sparse: nothing on disk until the build writes the layers
    cache = tmp_path / "cache"
    env = dict(os.environ, SKIFF_CACHE_DIR=str(cache))
    with build_in_background(model, env) as process:
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while process.stderr.readline().strip() != "building the weights layer":
            assert process.poll() is None and time.monotonic() < deadline
        # The layers are being written: some bytes of each have reached the cache.
        while len(blobs_being_written(cache)) < 3:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        code, took = interrupt(process, signum=signum)
    assert code == 128 + signum
    assert took < 1.0, f"exited {took:.1f} s after the signal"
    blobs = cache / "oci" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        if not blob.name.startswith("."):
            digest = hashlib.sha256()
            with blob.open("rb") as handle:
                while data := handle.read(MB):
                    digest.update(data)
            assert digest.hexdigest() == blob.name, f"{blob.name} holds other bytes"
    # The next build, once the partial blobs are a few seconds old, clears them.
    for partial in blobs.glob(".ingest-*"):
        os.utime(partial, (time.time() - 60, time.time() - 60))
    for name in ("a.bin", "b.bin", "c.bin"):
        (model / "weights" / name).unlink()
    done = subprocess.run(
        [str(SKIFF), "build", "-C", str(model)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not list(blobs.glob(".ingest-*"))


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a registry that
    hangs. ``connected`` is set once a client is waiting on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # accept() wakes up to see whether the test is done
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connected = threading.Event()
        self.stopped = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.held.append(conn)
            self.connected.set()

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("signum", STOP_SIGNALS[1:], ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("command", ["check", "login"])
def test_a_signal_while_check_or_login_waits_for_the_registry(
    tmp_path: Path, command: str, signum: int
) -> None:
    with SilentServer() as server:
        if command == "check":
            args = ["check", f"{server.host}/demo/waiting:v1", "-C", str(tmp_path), "--json"]
        else:
            args = ["login", server.host, "-u", "someone", "--password-stdin"]
        env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker"))
        with subprocess.Popen(
            [str(SKIFF), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=default_sigint,
        ) as process:
            try:
                assert process.stdin is not None
                process.stdin.write("a-password\n")
                process.stdin.close()
                assert server.connected.wait(30), "skiff never asked the registry"
                time.sleep(0.2)  # the request is sent: skiff waits for the answer
                code, took = interrupt(process, timeout=10, signum=signum)
            finally:
                if process.poll() is None:
                    process.kill()
            assert process.stdout is not None and process.stderr is not None
            stdout, stderr = process.stdout.read(), process.stderr.read()
    assert code == 128 + signum, stdout + stderr
    assert took < 1.0, f"exited {took:.2f} s after the signal"
    if command == "check":
        assert_told(signum, stdout, stderr)
    else:
        assert stderr.splitlines()[-1] == f"interrupted by {signal.Signals(signum).name}"
        assert stdout == ""
        assert not (tmp_path / "docker" / "config.json").exists()


def test_sighup_ignored_by_nohup_stays_ignored(tmp_path: Path) -> None:
    """``nohup skiff push ...`` must survive the terminal closing: an ignored SIGHUP is left
    ignored (as Python leaves an ignored SIGINT); SIGTERM still stops the command."""

    def like_nohup() -> None:
        default_sigint()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    with SilentServer() as server:
        args = ["check", f"{server.host}/demo/waiting:v1", "-C", str(tmp_path), "--json"]
        with subprocess.Popen(
            [str(SKIFF), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=like_nohup,
        ) as process:
            try:
                assert server.connected.wait(30), "skiff never asked the registry"
                process.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                assert process.poll() is None, "SIGHUP stopped a command run under nohup"
                code, _ = interrupt(process, timeout=10, signum=signal.SIGTERM)
            finally:
                if process.poll() is None:
                    process.kill()
            stdout, stderr = process.communicate()
    assert code == 143, stdout + stderr
    assert_told(signal.SIGTERM, stdout, stderr)
