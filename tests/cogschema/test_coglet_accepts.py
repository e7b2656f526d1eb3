"""coglet 0.23.1 (Cog's server, from PyPI) takes the schemas skiff writes.

For every fixture with a valid and an ill-typed input: the fixture folder with
``.cog/openapi_schema.json`` is served by Cog's server on 127.0.0.1 as in an image;
its /openapi.json must be the schema we wrote, the valid input must be predicted and the ill-typed
one answered 422. The runtime is installed once by uv from PyPI into the test cache.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from skiff import cogschema

FIXTURES = Path(__file__).parent / "fixtures"
COG_VERSION = cogschema.COG_VERSION
SERVED = sorted(
    p.parent.name
    for p in FIXTURES.glob("*/case.json")
    if "valid_input" in json.loads(p.read_text())
)


def _test_cache() -> Path:
    root = os.environ.get("SKIFF_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "skiff-tests"
    )
    return Path(root)


def _uv() -> list[str]:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="session")
def cog_python() -> Path:
    """An interpreter with cog and coglet 0.23.1 from PyPI, made once and kept in the test cache."""
    cache = _test_cache()
    # pydantic too: fixtures with pydantic.BaseModel outputs list it in their python_packages.
    venv = cache / f"cog-{COG_VERSION}-pydantic2-py{sys.version_info.major}{sys.version_info.minor}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".{venv.name}.{os.getpid()}"
    env = {**os.environ, "UV_CACHE_DIR": str(cache / "uv")}
    subprocess.run(
        [*_uv(), "venv", "-q", "--python", sys.executable, str(staging)],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [
            *_uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(staging / "bin" / "python"),
            f"cog=={COG_VERSION}",
            "pydantic>=2,<3",
        ],
        check=True,
        env=env,
        timeout=600,
    )
    try:
        staging.rename(venv)  # a concurrent run may have won the race; either copy will do
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Coglet:
    """Cog's server on a model folder, bound to 127.0.0.1; always stopped on exit."""

    def __init__(self, python: Path, folder: Path, ref: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            # coglet starts its worker as a bare `python`: it must be this interpreter.
            "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PORT": str(self.port),
            "COG_PREDICT_TYPE_STUB": ref,
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "HOME": str(folder),
        }
        self.log = folder / "server.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(python), "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=folder,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, client: httpx.Client, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status = client.get(f"{self.url}/health-check").json().get("status")
            except (httpx.HTTPError, ValueError):
                status = None
            if status == "READY":
                return
            if status in ("SETUP_FAILED", "DEFUNCT"):
                break
            time.sleep(0.2)
        raise AssertionError(f"coglet did not become ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture
def serve(cog_python: Path) -> Iterator[Any]:
    servers: list[Coglet] = []

    def start(folder: Path, ref: str) -> Coglet:
        server = Coglet(cog_python, folder, ref)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("name", SERVED)
def test_coglet_serves_and_validates_with_our_schema(name: str, tmp_path: Path, serve: Any) -> None:
    case = json.loads((FIXTURES / name / "case.json").read_text())
    ref = case.get("predict")
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    (folder / ".cog").mkdir()
    (folder / ".cog" / "openapi_schema.json").write_bytes(
        cogschema.render(folder, ref, case.get("train"))
    )
    ours = json.loads((folder / ".cog" / "openapi_schema.json").read_text())

    server = serve(folder, ref)
    with httpx.Client(timeout=30, trust_env=False) as client:
        server.wait_ready(client)
        served = client.get(f"{server.url}/openapi.json")
        assert served.status_code == 200
        assert served.json() == ours

        good = client.post(f"{server.url}/predictions", json={"input": case["valid_input"]})
        assert good.status_code == 200, good.text
        assert good.json()["status"] == "succeeded", good.text

        if case.get("invalid_input") is not None:
            bad = client.post(f"{server.url}/predictions", json={"input": case["invalid_input"]})
            assert bad.status_code == 422, bad.text
            assert bad.json()["detail"], bad.text
