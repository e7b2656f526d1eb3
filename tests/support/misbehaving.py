"""A deliberately broken "registry" on 127.0.0.1, for proving that skiff survives garbage.

Each route answers with a canned ``Reply`` (status, headers, body), or a callable that builds one
from the request; anything not routed answers ``fallback``. Bodies may contain ``{base}``, which
is replaced by the server's own ``http://127.0.0.1:PORT`` so a reply can point back at it (token
realms, redirects). Every request is recorded, without its Authorization header's value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """One request the server got. ``authorized`` says whether it carried credentials."""

    method: str
    path: str
    query: str
    authorized: bool


Route = Reply | Callable[["Seen"], Reply]


class MisbehavingServer:
    """``routes`` maps ``"METHOD /path"`` (path without query) to a reply; use as a context."""

    def __init__(self, routes: Mapping[str, Route] | None = None, fallback: Reply | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.fallback = fallback or Reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> MisbehavingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            seen = Seen(
                self.command, url.path, url.query, self.headers.get("Authorization") is not None
            )
            reply = server.reply_for(seen)
            body = reply.body.encode() if isinstance(reply.body, str) else reply.body
            body = body.replace(b"{base}", server.url.encode())
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value.replace("{base}", server.url))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler
