"""``skiff serve`` (and ``skiff predict``) under real signals: Cog's server answers while skiff
runs, and SIGTERM or Ctrl-C (SIGINT) leaves no process and no bound port behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import (
    GONE_TIMEOUT_S,
    READY_TIMEOUT_S,
    copy_model,
    descendants,
    free_port,
    port_is_free,
    wait_gone,
    wait_ready,
)


def start_serve(folder: Path, port: int, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "skiff.cli", "serve", "-C", str(folder), "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_and_its_worker(tmp_path: Path, sig: signal.Signals) -> None:
    folder = copy_model("echo", tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(folder, port, tmp_path)
    try:
        health = wait_ready(url, process)
        # Cog's own server: coglet at the pinned version.
        version = health["version"]
        assert isinstance(version, dict) and version["coglet"] == "0.23.1"
        answer = httpx.post(f"{url}/predictions", json={"input": {"text": "yo"}}, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["output"] == "echo: yo"
        bad = httpx.post(f"{url}/predictions", json={"input": {"text": "yo", "times": "2"}})
        assert bad.status_code == 422
        children = descendants(process.pid)
        assert len(children) >= 2, children  # the server and its predictor worker
        os.kill(process.pid, sig)
        process.wait(GONE_TIMEOUT_S)
        assert wait_gone(children) == []
        assert port_is_free(port)
        assert process.returncode == 128 + sig
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_during_a_prediction_stops_everything(tmp_path: Path) -> None:
    folder = copy_model("slow", tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "skiff.cli", "predict", "-C", str(folder), "-i", "seconds=600"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        children: list[int] = []
        # The worker prints "started" once the prediction runs; wait for the process tree.
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            children = descendants(process.pid)
            if any(_is_worker(pid) for pid in children):
                break
            time.sleep(0.2)
        ports = _listening_ports(children)
        assert ports, "Cog's server listens on a port while the prediction runs"
        time.sleep(1.0)  # into the prediction's sleep
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=GONE_TIMEOUT_S)
        assert process.returncode == 128 + signal.SIGTERM, err
        assert "Traceback" not in err
        assert wait_gone(children) == []
        assert all(port_is_free(p) for p in ports)
        cache = Path(os.environ["SKIFF_CACHE_DIR"])
        assert list((cache / "run" / "src").iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _is_worker(pid: int) -> bool:
    try:
        return b"_run_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _listening_ports(pids: list[int]) -> list[int]:
    """TCP ports the processes listen on (from /proc/net/tcp and their sockets' inodes)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            ports.append(int(fields[1].split(":")[1], 16))
    return ports


def test_a_port_in_use_is_exit_2_before_the_model_starts(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "skiff.cli", "serve", "-C", str(folder), "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_ctrl_c_still_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    port = free_port()
    process = start_serve(folder, port, tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        tree = descendants(process.pid)
        os.kill(process.pid, signal.SIGINT)
        time.sleep(0.02)
        os.kill(process.pid, signal.SIGINT)
        process.wait(GONE_TIMEOUT_S)
        assert wait_gone(tree) == []
        assert port_is_free(port)
        assert process.returncode == 128 + signal.SIGINT
        assert "Traceback" not in process.communicate()[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sdk_version_in_cog_yaml_picks_cogs_runtime(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    text = (folder / "cog.yaml").read_text()
    (folder / "cog.yaml").write_text(text.replace("build:\n", 'build:\n  sdk_version: "0.23.0"\n'))
    port = free_port()
    process = start_serve(folder, port, tmp_path)
    try:
        health = wait_ready(f"http://127.0.0.1:{port}", process)
        version = health["version"]
        assert isinstance(version, dict) and version["python_sdk"] == "0.23.0", version
        os.kill(process.pid, signal.SIGTERM)
        process.wait(GONE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
