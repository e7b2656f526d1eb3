"""Per-thread capture of stdout/stderr, so each prediction gets its own ``logs``.

The predictor prints from the thread that runs it; a process-wide stream that routes
writes by thread id keeps concurrent predictions' logs apart without a subprocess.
Writes are still passed through to the real stream (the container log), as Cog does.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from typing import TextIO

_routes: dict[int, Callable[[str], None]] = {}
_routes_lock = threading.Lock()


class _RoutingStream(io.TextIOBase):
    def __init__(self, passthrough: TextIO) -> None:
        super().__init__()
        self._passthrough = passthrough

    def write(self, s: str) -> int:
        sink = _routes.get(threading.get_ident())
        if sink is not None and s:
            sink(s)
        self._passthrough.write(s)
        return len(s)

    def flush(self) -> None:
        self._passthrough.flush()

    def fileno(self) -> int:
        return self._passthrough.fileno()

    def isatty(self) -> bool:
        return self._passthrough.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._passthrough, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._passthrough, "errors", None)

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> object:
        # Anything else (buffer, errors, reconfigure, ...) is the real stream's: libraries
        # that reach for sys.stdout.buffer keep working (those bytes are not captured).
        return getattr(self._passthrough, name)


def install(stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
    """Replace sys.stdout/sys.stderr with routing streams (idempotent).

    ``stdout``/``stderr`` name where writes are passed through; the local runner sends
    both to stderr so that its own stdout carries only the JSON result.
    """
    if not isinstance(sys.stdout, _RoutingStream):
        sys.stdout = _RoutingStream(stdout or sys.stdout)
    if not isinstance(sys.stderr, _RoutingStream):
        sys.stderr = _RoutingStream(stderr or sys.stderr)


class capture:
    """Send this thread's writes to ``sink`` while the block runs."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._ident = threading.get_ident()

    def __enter__(self) -> capture:
        with _routes_lock:
            _routes[self._ident] = self._sink
        return self

    def __exit__(self, *exc: object) -> None:
        with _routes_lock:
            _routes.pop(self._ident, None)
