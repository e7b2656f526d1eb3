"""Gzip whose bytes depend on the input alone, so that a layer has one digest on every machine.

A gzip layer is named in the registry by the digest of its compressed bytes: two machines that
build the same inputs must write the same bytes, or each re-uploads what the other pushed.
Python's ``zlib`` compresses with whatever library the interpreter was linked with: zlib on
most Linux distributions, zlib-ng on others (Fedora 40+) and in some Python builds, and the two
write different bytes. skiff compresses with libdeflate instead, bundled by the ``deflate``
package at a pinned version: libdeflate's output is fixed for a given version on every platform.

The output is a series of independent gzip members, one per MiB of input (RFC 1952 §2.2: a gzip
file is a series of members; Go's, Python's and GNU gzip's readers read them all, as for eStargz
layers). Members cut at fixed input offsets keep the bytes independent of how the input was
written, and independent members compress side by side on the CPU's cores: libdeflate releases
the interpreter lock.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Protocol, Self

import deflate

MEMBER_INPUT = 1 << 20  # uncompressed bytes per member
LEVEL = 6  # libdeflate's default: zlib's ratio, about three times its speed
_MAX_WORKERS = 4


class _Sink(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...


class ChunkedWriter:
    """A write-only file object: what is written goes to ``target`` compressed, in independent
    pieces of ``chunk`` input bytes each (gzip members, zstd frames), so the bytes depend on the
    input alone, never on how it was written or on how many threads compressed it.

    Full pieces are compressed by a small thread pool, at most ``2 * workers`` of them in
    flight, and written in input order; ``close`` writes the last (partial) piece. Leaving the
    ``with`` block on an exception drops what is pending and writes nothing more.
    """

    chunk = MEMBER_INPUT

    def __init__(self, target: _Sink, *, workers: int | None = None) -> None:
        self._target = target
        self._pending = bytearray()
        self._in_flight: deque[Future[bytes]] = deque()
        self._workers = workers or min(_MAX_WORKERS, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._written_any = False
        self._closed = False

    def compress(self, data: bytes) -> bytes:
        """One independent piece; called from the pool's threads (must release the GIL)."""
        raise NotImplementedError

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError(f"write to a closed {type(self).__name__}")
        self._pending += data
        chunk = self.chunk
        full = len(self._pending) - len(self._pending) % chunk
        for start in range(0, full, chunk):
            self._submit(bytes(self._pending[start : start + chunk]))
        if full:
            del self._pending[:full]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: a piece is written only once it is complete."""

    def close(self) -> None:
        """Writes every pending piece, the last partial one included."""
        if self._closed:
            return
        self._closed = True
        try:
            while self._in_flight:
                self._target.write(self._in_flight.popleft().result())
            if self._pending or not self._written_any:
                # An empty input still makes a valid compressed file: one empty piece.
                self._target.write(self.compress(bytes(self._pending)))
                self._pending.clear()
        finally:
            self._shutdown(cancel=False)

    def abort(self) -> None:
        """Drops whatever is pending; nothing more is written."""
        self._closed = True
        self._pending.clear()
        self._in_flight.clear()
        self._shutdown(cancel=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _submit(self, piece: bytes) -> None:
        self._written_any = True
        if self._workers <= 1:
            self._target.write(self.compress(piece))
            return
        if self._pool is None:  # made on the first full piece: small layers need no threads
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="skiff-compress")
        self._in_flight.append(self._pool.submit(self.compress, piece))
        while len(self._in_flight) > 2 * self._workers:
            self._target.write(self._in_flight.popleft().result())

    def _shutdown(self, *, cancel: bool) -> None:
        if self._pool is not None:
            # Waits at most for the pieces being compressed (milliseconds each).
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None


class GzipMembers(ChunkedWriter):
    """Reproducible gzip: one libdeflate member per MiB of input."""

    chunk = MEMBER_INPUT

    def compress(self, data: bytes) -> bytes:
        return bytes(deflate.gzip_compress(data, LEVEL))
