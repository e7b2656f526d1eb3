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
from typing import Protocol

import deflate

MEMBER_INPUT = 1 << 20  # uncompressed bytes per member
LEVEL = 6  # libdeflate's default: zlib's ratio, about three times its speed
_MAX_WORKERS = 4


class _Sink(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...


class GzipMembers:
    """A write-only file object: what is written goes to ``target`` as reproducible gzip.

    Full members are compressed by a small thread pool, at most ``2 * workers`` of them in
    flight, and written in input order; ``close`` writes the last (partial) member. Leaving the
    ``with`` block on an exception drops what is pending and writes nothing more.
    """

    def __init__(self, target: _Sink, *, workers: int | None = None) -> None:
        self._target = target
        self._pending = bytearray()
        self._in_flight: deque[Future[bytearray]] = deque()
        self._workers = workers or min(_MAX_WORKERS, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._written_any = False
        self._closed = False

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed GzipMembers")
        self._pending += data
        full = len(self._pending) - len(self._pending) % MEMBER_INPUT
        for start in range(0, full, MEMBER_INPUT):
            self._submit(bytes(self._pending[start : start + MEMBER_INPUT]))
        if full:
            del self._pending[:full]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: a member is written only once it is complete."""

    def close(self) -> None:
        """Writes every pending member, the last partial one included."""
        if self._closed:
            return
        self._closed = True
        try:
            while self._in_flight:
                self._target.write(self._in_flight.popleft().result())
            if self._pending or not self._written_any:
                # An empty input still makes a valid gzip file: one empty member.
                self._target.write(deflate.gzip_compress(bytes(self._pending), LEVEL))
                self._pending.clear()
        finally:
            self._shutdown(cancel=False)

    def abort(self) -> None:
        """Drops whatever is pending; nothing more is written."""
        self._closed = True
        self._pending.clear()
        self._in_flight.clear()
        self._shutdown(cancel=True)

    def __enter__(self) -> GzipMembers:
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

    def _submit(self, member_input: bytes) -> None:
        self._written_any = True
        if self._workers <= 1:
            self._target.write(deflate.gzip_compress(member_input, LEVEL))
            return
        if self._pool is None:  # made on the first full member: small layers need no threads
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="skiff-gzip")
        self._in_flight.append(self._pool.submit(deflate.gzip_compress, member_input, LEVEL))
        while len(self._in_flight) > 2 * self._workers:
            self._target.write(self._in_flight.popleft().result())

    def _shutdown(self, *, cancel: bool) -> None:
        if self._pool is not None:
            # Waits at most for the members being compressed (milliseconds each).
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
