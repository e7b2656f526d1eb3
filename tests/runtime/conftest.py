"""Fixtures for the in-image runtime: real server subprocesses and local HTTP receivers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from skiff.runtime import runtime_dir

FIXTURES = Path(__file__).parent / "fixtures"
RUNTIME = runtime_dir()

# The runtime imports `cog` top-level, as it will inside the image.
if str(RUNTIME) not in sys.path:
    sys.path.insert(0, str(RUNTIME))


def runtime_env(**extra: str) -> dict[str, str]:
    """A minimal environment: only the runtime on the path, no proxies."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(RUNTIME),
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def python_stdlib_only() -> list[str]:
    """The interpreter without site-packages (-S): proves the runtime needs only the stdlib."""
    return [sys.executable, "-S"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CogServer:
    """`python -m cog.server.http` in a fixture folder, on a free 127.0.0.1 port."""

    def __init__(
        self,
        folder: str,
        predictor: str | None = "predict.py:Predictor",
        python: str = sys.executable,
        args: tuple[str, ...] = (),
        **env: str,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = {"PORT": str(self.port), **env}
        if predictor is not None:
            extra["COG_PREDICTOR"] = predictor
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [python, "-S", "-m", "cog.server.http", "--host", "127.0.0.1", *args],
            cwd=FIXTURES / folder,
            env=runtime_env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def wait_listening(self, timeout: float = 5) -> float:
        """Seconds from spawn until the first health-check answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                self.client.get("/health-check")
                return time.monotonic() - self.started
            except httpx.TransportError:
                time.sleep(0.02)
        raise TimeoutError("server did not start listening")

    def wait_status(self, status: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.client.get("/health-check").json()
            if body["status"] == status:
                return body
            time.sleep(0.02)
        raise TimeoutError(f"health-check never said {status}: last {body}")

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Factory: start_server(folder, **env) -> a READY CogServer; all are stopped after."""
    servers: list[CogServer] = []

    def start(folder: str, ready: bool = True, **kwargs: Any) -> CogServer:
        server = CogServer(folder, **kwargs)
        servers.append(server)
        server.wait_listening()
        if ready:
            server.wait_status("READY")
        return server

    yield start
    for server in servers:
        server.stop()


class Receiver:
    """A local HTTP endpoint recording POSTed JSON (webhooks) and PUT bodies (uploads)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                payload = json.loads(self._body())
                with receiver.cond:
                    receiver.events.append(payload)
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self) -> None:
                with receiver.cond:
                    receiver.uploads[self.path] = self._body()
                    receiver.cond.notify_all()
                self.send_response(201)
                self.send_header("Location", f"/stored{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                data = receiver.uploads.get(self.path, b"")
                self.send_response(200 if data else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=lambda: self.server.serve_forever(poll_interval=0.05), daemon=True
        )
        self.thread.start()

    def wait_for(self, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.events), timeout):
                raise TimeoutError(f"webhook condition not met; events: {self.events}")
            return list(self.events)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
