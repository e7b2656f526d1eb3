"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, in front of a real registry.

Clients talk to the proxy as if it were the registry (Distribution builds its ``Location``
headers from the ``Host`` it is sent, so upload sessions keep going through the proxy). Each
request is matched against the armed faults; a fault fires a bounded number of times:

- ``reset(after_body_bytes=N)``: forward the request head and the first N bytes of its body to
  the registry, then reset both connections (RST, as when a network path dies mid-upload);
- ``lose_response()``: forward the whole request, let the registry act on it, then reset the
  client's connection instead of relaying the answer (the work was done; the client cannot know);
- ``respond(code, headers)``: answer ``code`` without asking the registry (502, 503, 429 with
  ``Retry-After``...); the request body is read and dropped, so the connection stays usable.

Everything else is relayed byte for byte, and a TLS handshake (skiff tries HTTPS first) is piped
through untouched. ``log`` records what happened to each request.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

_COPY = 64 * 1024
_NO_BODY_STATUSES = (204, 304)


@dataclass
class Fault:
    """What to do to requests matching ``method`` and the ``path`` regex (searched for)."""

    method: str
    path: str
    action: str  # "reset" | "lose_response" | "status"
    after_body_bytes: int = 0
    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    min_body: int = 0  # only requests whose declared body is at least this long
    max_body: int | None = None  # ... and at most this long
    # True: only bodies sent with chunked transfer encoding (length unknown: a layer streamed
    # while it is built), which the size limits above never match; False: only the others.
    chunked: bool | None = None
    times: int = 1  # fires this many times, then the proxy relays again
    skip: int = 0  # let this many matching requests through first
    fired: int = 0
    on_fire: Callable[[], object] | None = None  # runs when it fires (a test marks the moment)

    def matches(self, method: str, target: str, body_length: int | None) -> bool:
        if method != self.method or not re.search(self.path, target):
            return False
        if self.chunked is not None and self.chunked != (body_length is None):
            return False
        length = body_length or 0
        return length >= self.min_body and (self.max_body is None or length <= self.max_body)


@dataclass(frozen=True)
class Logged:
    method: str
    target: str
    body_length: int | None
    # The registry's status ("202"), "reset", "lost 202", "injected 503", "closed by the registry"
    outcome: str
    at: float = field(default_factory=time.monotonic)


class _Closed(Exception):
    """The peer went away; drop this connection."""


class _Reset(Exception):
    """A fault fired: reset both connections."""


class FaultProxy:
    """Listen on 127.0.0.1:<free port> and relay to ``upstream`` ("127.0.0.1:PORT")."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._acceptor.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- arming ---------------------------------------------------------------------------------

    def reset(self, method: str, path: str, *, after_body_bytes: int, **kw: Any) -> Fault:
        return self._arm(Fault(method, path, "reset", after_body_bytes=after_body_bytes, **kw))

    def lose_response(self, method: str, path: str, **kw: Any) -> Fault:
        return self._arm(Fault(method, path, "lose_response", **kw))

    def respond(
        self, method: str, path: str, status: int, headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Fault:  # fmt: skip
        return self._arm(Fault(method, path, "status", status=status, headers=headers or {}, **kw))

    def _arm(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def disarm(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault_for(self, method: str, target: str, body_length: int | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fired >= fault.times or not fault.matches(method, target, body_length):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.fired += 1
                break
            else:
                return None
        if fault.on_fire is not None:
            fault.on_fire()
        return fault

    def requests(self, method: str | None = None, path: str = "") -> list[Logged]:
        with self._lock:
            return [
                entry
                for entry in self.log
                if (method is None or entry.method == method) and re.search(path, entry.target)
            ]

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # Wakes the relay threads blocked on reads (close() alone waits for their files).
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    # -- relaying -------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        upstream: socket.socket | None = None
        files: list[BinaryIO] = []
        reset = False
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
            self._track(upstream)
            client_in = client.makefile("rb")
            upstream_in = upstream.makefile("rb")
            files += [client_in, upstream_in]
            if client_in.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
                # A TLS handshake (skiff tries HTTPS first): not HTTP, relay it untouched.
                _pipe(client_in, upstream, upstream_in, client)
                return
            while not self._stopping.is_set():
                if not self._one_request(client, client_in, upstream, upstream_in):
                    break
        except _Reset:
            reset = True
        except (_Closed, OSError):
            pass
        finally:
            for file in files:  # the sockets only really close once their files are closed
                with contextlib.suppress(OSError):
                    file.close()
            for sock in (client, upstream):
                if sock is not None:
                    self._forget(sock)
                    if reset:
                        _hard_close(sock)
                    else:
                        sock.close()

    def _one_request(
        self,
        client: socket.socket,
        client_in: BinaryIO,
        upstream: socket.socket,
        upstream_in: BinaryIO,
    ) -> bool:
        head = _read_head(client_in)
        if head is None:
            return False
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _version = request_line.split(" ", 2)
        headers = _headers(head)
        length = int(headers["content-length"]) if "content-length" in headers else None
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is None and not chunked:
            length = 0  # a request without framing headers has no body
        fault = self._fault_for(method, target, length)

        if fault is not None and fault.action == "status":
            _drain_body(client_in, length, chunked)
            extra = "".join(f"{k}: {v}\r\n" for k, v in fault.headers.items())
            client.sendall(
                f"HTTP/1.1 {fault.status} Injected\r\n{extra}Content-Length: 0\r\n\r\n".encode()
            )
            self._record(Logged(method, target, length, f"injected {fault.status}"))
            return True

        upstream.sendall(head)
        if fault is not None and fault.action == "reset":  # after N bytes of the body
            _copy_body(client_in, upstream, length, chunked, limit=fault.after_body_bytes)
            self._record(Logged(method, target, length, "reset"))
            raise _Reset
        if fault is not None:  # lose_response
            _copy_body(client_in, upstream, length, chunked)
            answer = _read_head(upstream_in)
            status = answer.split(b" ", 2)[1].decode() if answer else "nothing"
            self._record(Logged(method, target, length, f"lost {status}"))
            raise _Reset
        try:
            _copy_body(client_in, upstream, length, chunked)
            complete = True
        except OSError:
            # The registry answered before reading the whole body, and hung up: relay its answer.
            complete = False

        response_head = _read_head(upstream_in)
        if response_head is None:
            self._record(Logged(method, target, length, "closed by the registry"))
            raise _Closed
        client.sendall(response_head)
        status = int(response_head.split(b" ", 2)[1])
        response_headers = _headers(response_head)
        self._record(Logged(method, target, length, str(status)))
        if method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
            return complete
        if "chunked" in response_headers.get("transfer-encoding", "").lower():
            _copy_body(upstream_in, client, None, True)
        elif "content-length" in response_headers:
            _copy_body(upstream_in, client, int(response_headers["content-length"]), False)
        else:  # delimited by the end of the connection
            _copy_body(upstream_in, client, None, False)
            return False
        return complete and "close" not in response_headers.get("connection", "").lower()


def _pipe(a_in: BinaryIO, a_out: socket.socket, b_in: BinaryIO, b_out: socket.socket) -> None:
    def copy(source: BinaryIO, sink: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while data := source.read1(_COPY):  # type: ignore[attr-defined]
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(b_in, b_out), daemon=True)
    back.start()
    copy(a_in, a_out)
    back.join(timeout=30)


def _read_head(stream: BinaryIO) -> bytes | None:
    lines: list[bytes] = []
    while True:
        line = stream.readline(65537)
        if not line:
            if lines:
                raise _Closed
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n") and len(lines) > 1:
            return b"".join(lines)
        if line in (b"\r\n", b"\n"):
            lines.clear()  # stray blank line between requests


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            out[name.strip().lower()] = value.strip()
    return out


def _copy_body(
    source: BinaryIO,
    sink: socket.socket,
    length: int | None,
    chunked: bool,
    limit: int | None = None,
) -> None:
    """Relay one message body; with ``limit``, stop after that many bytes of it."""
    budget = [limit if limit is not None else -1]

    def send(data: bytes) -> bool:
        if budget[0] >= 0:
            data = data[: budget[0]]
            budget[0] -= len(data)
        if data:
            sink.sendall(data)
        return budget[0] != 0

    if chunked:
        while True:
            size_line = source.readline(1024)
            if not size_line:
                raise _Closed
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if not send(size_line):
                return
            if size == 0:
                while True:  # trailers, up to the blank line
                    trailer = source.readline(65537)
                    if not trailer:
                        raise _Closed
                    if not send(trailer) or trailer in (b"\r\n", b"\n"):
                        return
            data = source.read(size + 2)
            if len(data) < size + 2:
                raise _Closed
            if not send(data):
                return
    if length is None:
        while data := source.read1(_COPY):  # type: ignore[attr-defined]
            if not send(data):
                return
        return
    remaining = length
    while remaining > 0:
        data = source.read(min(_COPY, remaining))
        if not data:
            raise _Closed
        remaining -= len(data)
        if not send(data):
            return


def _drain_body(source: BinaryIO, length: int | None, chunked: bool) -> None:
    if chunked:
        while True:
            size = int(source.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while source.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return
            source.read(size + 2)
    remaining = length or 0
    while remaining > 0:
        data = source.read(min(_COPY, remaining))
        if not data:
            raise _Closed
        remaining -= len(data)


def _hard_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer sees 'connection reset', not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


__all__ = ["Fault", "FaultProxy", "Logged"]
