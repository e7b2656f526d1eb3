"""Ctrl-C in the middle of an upload: ``skiff push`` exits 130 at once, the registry is told to
forget the upload sessions, and the next push completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hardutil import MB, SKIFF, assert_complete, make_model, open_sessions, skiff
from throttle import Throttle

from support import RegistryServer
from support.faultproxy import FaultProxy

REPO = "demo/interrupted"


def default_sigint() -> None:
    """Runs in the child: a shell runs background jobs with SIGINT ignored, which the child
    would inherit; Ctrl-C at a terminal finds the default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def interrupt(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, float]:
    """Ctrl-C to ``process``: its exit code, and how long it took to exit after the signal."""
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
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


def test_ctrl_c_mid_upload_exits_130_within_a_second_and_cancels_the_sessions(
    tmp_path: Path, registry: RegistryServer
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
                _, took = interrupt(process, timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
            stdout, stderr = process.communicate()
        assert process.returncode == 130, stdout + stderr
        assert took < 1.0, f"exited {took:.2f} s after Ctrl-C"
        assert "Traceback" not in stderr
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


def test_ctrl_c_while_weights_layers_are_built_side_by_side_exits_at_once(
    tmp_path: Path, registry: RegistryServer
) -> None:
    """Three large weights files are written into the cache at once; Ctrl-C does not wait for
    them to finish."""
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
        code, took = interrupt(process)
    assert code == 130
    assert took < 1.0, f"exited {took:.1f} s after Ctrl-C"
