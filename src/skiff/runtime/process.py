"""Cog's server as a child of skiff: started in a process group of its own, stopped whole.

coglet runs its predictor in a worker process of its own (and under bwrap there are more), so
stopping only the first child leaves the rest behind. The server gets a process group: SIGTERM,
SIGINT and SIGHUP that reach skiff are turned into a stop of the whole group (SIGTERM, which
coglet answers with a clean shutdown, then SIGKILL after a grace period), and the kernel sends
SIGTERM to the server if skiff itself is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from skiff.errors import InvalidInput, SkiffError

GRACE_S = 10.0
SETUP_TIMEOUT_S = 300.0
_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(BaseException):
    """skiff got a signal to stop; a BaseException so that no ``except Exception`` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SetupFailed(SkiffError):
    """The model's setup() failed or the server did not come up (exit 1)."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT/SIGHUP raise ``Stopped`` in the main thread."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_port(host: str, port: int) -> None:
    """Refuses a port another program listens on, before the model is started for nothing."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "choose another port with --port (or stop what listens there)",
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM to it when skiff dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Server:
    """One Cog server process (and everything it starts), on ``127.0.0.1:port`` or ``host``."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        port: int,
        *,
        capture: bool,
        show_all: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.port = port
        self.capture = capture
        self.show_all = show_all
        connect = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{connect}:{port}"
        self.messages: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        output: int | IO[Any] | None = subprocess.PIPE if self.capture else None
        try:
            self._process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                # stdout is skiff's output (the prediction) and nothing else: the server's own
                # output goes to stderr, or through the reader when captured.
                stdout=output if self.capture else sys.stderr,
                stderr=subprocess.STDOUT if self.capture else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise SetupFailed(f"cannot start {self.argv[0]}: {exc.strerror}") from exc
        if self.capture:
            self._reader = threading.Thread(target=self._read, daemon=True, name="skiff-log")
            self._reader.start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            message, show = _log_message(line)
            self.messages.append(message)
            # Once skiff stops the server, its complaints about the shutdown are not news.
            if (show or self.show_all) and not self._stopping:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def wait_ready(self, client: httpx.Client, timeout: float = SETUP_TIMEOUT_S) -> dict[str, Any]:
        """Polls /health-check until setup has finished; raises SetupFailed if it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise SetupFailed(
                    f"Cog's server exited with status {code} before it was ready"
                    + self._last_lines(),
                    "check that the model's packages install and its predictor imports",
                )
            try:
                health: dict[str, Any] = client.get(f"{self.url}/health-check").json()
            except (httpx.HTTPError, ValueError):
                time.sleep(_POLL_S)
                continue
            status = health.get("status")
            if status == "READY" or status == "BUSY":
                return health
            if status in ("SETUP_FAILED", "DEFUNCT"):
                logs = str((health.get("setup") or {}).get("logs") or "").strip()
                raise SetupFailed(
                    "the model's setup failed" + (":\n" + _tail(logs) if logs else ""),
                    "fix the error in setup() (or the predictor's imports) and try again",
                )
            time.sleep(_POLL_S)
        raise SetupFailed(
            f"the model was not ready after {timeout:.0f} s" + self._last_lines(),
            "setup() takes too long, or the server does not answer on its port",
        )

    def _last_lines(self) -> str:
        lines = [m for m in self.messages if m.strip()][-15:]
        return (":\n" + "\n".join(lines)) if lines else ""

    def stop(self, grace: float = GRACE_S) -> None:
        """Stops the server and everything in its process group; returns once they are gone."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        # A second Ctrl-C must not cut the stop short and leave the group running: the signals
        # wait until it is done (bounded by the grace period), then act as usual.
        blocked = _block(_STOP_SIGNALS)
        try:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(grace)
            # What is left of the group (a worker that ignored SIGTERM, or the server itself).
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            if self._reader is not None:
                self._reader.join(2.0)
        finally:
            _unblock(blocked)


def _block(signals: tuple[signal.Signals, ...]) -> set[int | signal.Signals] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _unblock(previous: set[int | signal.Signals] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still there (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_message(line: str) -> tuple[str, bool]:
    """coglet logs JSON lines: the model's own output (and warnings) are shown as text, the
    server's bookkeeping is kept for error messages only."""
    try:
        record = json.loads(line)
    except ValueError:
        return line, True
    if not isinstance(record, dict):
        return line, True
    fields = record.get("fields") or {}
    message = str(fields.get("message", line))
    level = str(record.get("level", "INFO"))
    shown = "source" in fields or level in ("WARN", "ERROR")
    return message, shown


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])
