"""Fixtures for ``skiff predict``/``skiff serve``: real Cog runtime (cog + coglet from PyPI).

The wheels come from PyPI through uv, into one uv cache for the whole session, so each test's
fresh SKIFF_CACHE_DIR makes its environment in about a second, without the network after the
first test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MODELS = Path(__file__).parent / "models"
# A bound for every skiff command here: setup of these models takes a second or two.
RUN_TIMEOUT_S = 180
READY_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 20.0


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(autouse=True)
def _shared_uv_cache(uv_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(uv_cache))


def copy_model(name: str, tmp_path: Path) -> Path:
    """A copy of ``models/NAME``: what a run leaves behind shows in a folder of the test's."""
    target = tmp_path / "models" / name
    shutil.copytree(MODELS / name, target)
    return target


def skiff(
    *args: str | Path, cwd: Path, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skiff.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_ready(url: str, process: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            health: dict[str, object] = httpx.get(f"{url}/health-check", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(0.2)
            continue
        if health.get("status") == "READY":
            return health
        time.sleep(0.2)
    raise AssertionError("the server was not ready in time")


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]
