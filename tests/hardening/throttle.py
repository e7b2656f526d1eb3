"""A TCP relay on 127.0.0.1 that slows what clients send (a slow uplink), for interrupting a
push in the middle of an upload. Each connection is relayed by two threads; ``rate`` (bytes per
second, None for full speed) can be changed while it runs, and ``stall(seconds)`` stops the
client's bytes for a while (a link that hangs, then recovers)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

_PIECE = 16 * 1024


class Throttle:
    def __init__(self, upstream: str, rate: int | None) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._resume_at = 0.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="throttle", daemon=True)
        self._acceptor.start()

    def stall(self, seconds: float) -> None:
        self._resume_at = time.monotonic() + seconds

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Throttle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            pumps = [
                threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True),
                threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True),
            ]
            self._threads = [t for t in self._threads if t.is_alive()] + pumps
            for pump in pumps:
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(_PIECE):
                while slow and time.monotonic() < self._resume_at:
                    time.sleep(0.05)
                sink.sendall(data)
                rate = self.rate
                if slow and rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            # Either side closing ends the connection on both.
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                source.close()
