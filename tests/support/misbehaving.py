"""A deliberately broken "registry" on 127.0.0.1, for proving that skiff survives garbage.

Each route answers with a canned ``Reply`` (status, headers, body), or a callable that builds one
from the request; anything not routed answers ``fallback``. Bodies may contain ``{base}``, which
is replaced by the server's own ``http://127.0.0.1:PORT`` so a reply can point back at it (token
realms, redirects). Every request is recorded, without its Authorization header's value.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """``hang``: seconds to wait before answering at all (a service that accepts and never
    answers); ``trickle``: seconds between the bytes of the body; ``size``: a body of that many
    bytes (``body`` repeated), sent in pieces with that Content-Length, or with none (the end
    is the connection's close) if ``declare_length`` is False. Waits end when the server stops."""

    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: float = 0.0
    trickle: float = 0.0
    size: int | None = None
    declare_length: bool = True


@dataclass(frozen=True)
class Seen:
    """One request the server got. ``authorized`` says whether it carried credentials."""

    method: str
    path: str
    query: str
    authorized: bool
    # The Authorization header as "SCHEME <sha256 of the whole value, 12 hex>", or "": tells
    # whose credentials came without putting them in test output.
    credential: str = ""


Route = Reply | Callable[["Seen"], Reply]


class MisbehavingServer:
    """``routes`` maps ``"METHOD /path"`` (path without query) to a reply; use as a context."""

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        fallback: Reply | None = None,
        *,
        address: str = "127.0.0.1",
        name: str | None = None,
    ):
        self.routes: dict[str, Route] = dict(routes or {})
        self.fallback = fallback or Reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        self.seen: list[Seen] = []
        self.body_bytes_sent = 0  # of every answer's body, as far as the client took them
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        assert address.startswith("127."), "tests stay on loopback"
        self._server = ThreadingHTTPServer((address, 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        # ``name`` (e.g. "localhost") makes another origin of the same machine for clients.
        self.host = f"{name or address}:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> MisbehavingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, sent: int) -> None:
        with self._lock:
            self.body_bytes_sent += sent

    def reply_for(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
        route = self.routes.get(f"{seen.method} {seen.path}", self.fallback)
        return route(seen) if callable(route) else route


def _handler_for(server: MisbehavingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            url = urlsplit(self.path)
            authorization = self.headers.get("Authorization")
            credential = ""
            if authorization:
                digest = hashlib.sha256(authorization.encode()).hexdigest()[:12]
                credential = f"{authorization.split(' ', 1)[0]} {digest}"
            seen = Seen(self.command, url.path, url.query, authorization is not None, credential)
            reply = server.reply_for(seen)
            if reply.hang and server.stopping.wait(reply.hang):
                return
            body = reply.body.encode() if isinstance(reply.body, str) else reply.body
            body = body.replace(b"{base}", server.url.encode())
            length = len(body) if reply.size is None else reply.size
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value.replace("{base}", server.url))
            if reply.declare_length:
                self.send_header("Content-Length", str(length))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            # The client going away is what some tests measure (how much it took).
            with contextlib.suppress(OSError):
                self._send_body(body, length, reply.trickle)

        def _send_body(self, body: bytes, length: int, trickle: float) -> None:
            if not trickle and length == len(body):
                self.wfile.write(body)
                server.count(len(body))
                return
            piece = body or b"x"
            if not trickle:
                piece = (piece * (65536 // len(piece) + 1))[:65536]
            sent = 0
            while sent < length and not server.stopping.is_set():
                data = piece[: min(1 if trickle else len(piece), length - sent)]
                self.wfile.write(data)
                self.wfile.flush()
                sent += len(data)
                server.count(len(data))
                if trickle:
                    server.stopping.wait(trickle)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler
