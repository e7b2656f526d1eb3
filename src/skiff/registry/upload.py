"""Putting one blob into a repository with as few bytes on the wire as possible.

In order: ``HEAD`` (the registry has it: done), a cross-repository mount from a repository of the
same registry known to hold it (no bytes sent), else an upload: one ``PUT`` for a small blob
(kept in memory, so it can be sent again as is), one streamed ``PATCH`` for a large one (or
``PATCH`` chunks where a registry caps their size), read from the file in small pieces so that
memory does not grow with the blob. After a broken connection the upload resumes from the offset
the registry reports, or in a new session when the registry dropped the old one.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import httpx

from skiff.digest import CorruptBlob, Digest
from skiff.registry.client import RegistryClient, UploadSession
from skiff.registry.errors import (
    DigestMismatch,
    OversizedAnswer,
    ProtocolError,
    RegistryError,
    ServerError,
    Unreachable,
)
from skiff.registry.transport import abort_requests_of

log = logging.getLogger(__name__)

# Blobs up to this size go up in one PUT whose body is kept in memory (retryable as is).
MONOLITHIC_MAX = 8 * 1024 * 1024
# Registries that refuse large PATCH bodies (GHCR caps them at 4 MiB); elsewhere a large blob
# goes up in one streamed PATCH, as Docker and skopeo send it.
CHUNK_LIMITS = {"ghcr.io": 4 * 1024 * 1024}
RESUME_ATTEMPTS = 5
# A blob's commit may take this many read timeouts to be answered: the registry verifies and
# moves the whole blob first (minutes on object storage for a large one).
COMMIT_BUDGET = 4


class Outcome(enum.StrEnum):
    SKIPPED = "skipped"  # already in the repository
    MOUNTED = "mounted"  # linked from another repository of the registry
    UPLOADED = "uploaded"


@dataclass(frozen=True)
class BlobSource:
    """A blob to push: its digest, its size, and how to read it from the start."""

    digest: Digest
    size: int
    open: Callable[[], BinaryIO]
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class BlobResult:
    digest: Digest
    size: int
    outcome: Outcome
    bytes_sent: int


Progress = Callable[[int], None]


class UploadCancelled(RegistryError):
    """The push was interrupted (Ctrl-C); the sessions it had open were cancelled."""


# Of a cancellation's time, what is kept for the DELETEs once the requests in flight are over.
DELETE_RESERVE = 0.15


class UploadStalled(Unreachable):
    """No upload made progress for the stall deadline: the registry is silent or trickling."""


class Cancellation:
    """Shared by the uploads of one push: a flag to stop them between requests, the upload
    sessions they hold open and the requests in flight in them, so that an interrupted push
    can close them; and the time of the last progress, so that a silent registry cannot hold
    a push for longer than ``stall_deadline`` seconds (SKIFF_DEADLINE)."""

    def __init__(self, stall_deadline: float | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[str, RegistryClient] = {}
        # session location -> (thread sending a request in it, set once that request is over)
        self._busy: dict[str, tuple[int, threading.Event]] = {}
        self.stall_deadline = stall_deadline
        self._progress_at = time.monotonic()

    def progressed(self) -> None:
        """Bytes reached the registry, or a blob was completed."""
        self._progress_at = time.monotonic()

    def check_stall(self, host: str, exc: RegistryError) -> None:
        """Before a retry: give up when nothing has moved for the stall deadline."""
        if self.stall_deadline is None:
            return
        idle = time.monotonic() - self._progress_at
        if idle >= self.stall_deadline:
            raise UploadStalled(
                f"the upload to {host} made no progress for {idle:.0f} s "
                f"(SKIFF_DEADLINE={self.stall_deadline:g}); last failure: {exc.message}",
                "the registry is silent or overloaded; try again later (the build is cached)",
            ) from exc

    @contextlib.contextmanager
    def sending(self, session: UploadSession) -> Iterator[None]:
        """Marks a request in flight in ``session``, for ``cancel`` to break it off first."""
        done = threading.Event()
        with self._lock:
            self._busy[session.location] = (threading.get_ident(), done)
        try:
            yield
        finally:
            done.set()
            with self._lock:
                if self._busy.get(session.location, (0, None))[1] is done:
                    del self._busy[session.location]

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise UploadCancelled("the upload was interrupted")

    def wait(self, seconds: float) -> None:
        """Sleep for a retry's backoff, waking at once if the push is cancelled."""
        if self._event.wait(seconds):
            self.check()

    def opened(self, client: RegistryClient, session: UploadSession) -> None:
        """Remember ``session`` for ``cancel``; one opened after it raises UploadCancelled."""
        with self._lock:
            if not self._event.is_set():
                self._open[session.location] = client
                return
        # Opened as the push was being cancelled: cancel() has gone by, so close it here. (The
        # client may be closed already; the registry then lets the session expire.)
        with contextlib.suppress(RuntimeError):
            client.cancel_upload(session, timeout=0.5)
        self.check()

    def closed(self, session: UploadSession) -> None:
        with self._lock:
            self._open.pop(session.location, None)

    def cancel(self, timeout: float = 1.0) -> int:
        """Stop every upload and close the sessions still open (best effort, bounded).

        A registry cannot drop a session while a request in it is still arriving: the requests
        in flight are given the time to end first (a streamed body ends cleanly at its next
        piece; a body of declared length may finish), those still going are broken off, then
        each session is deleted.
        """
        self._event.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._open.items())
            self._open.clear()
            busy = list(self._busy.values())
        # A body sent in chunks (a layer streamed while it is built) ends cleanly at its next
        # piece, and the registry answers with the session's state, which lets it be deleted
        # (the worker does so): wait for that. A request that does not end in time is broken
        # off. (Distribution refuses to delete a session whose body broke off midway: the bytes
        # it holds no longer match the state in any Location skiff has.)
        for _thread, done in busy:
            done.wait(max(0.0, deadline - DELETE_RESERVE - time.monotonic()))
        for thread, done in busy:
            if not done.is_set():
                abort_requests_of(thread)
        closed = 0
        for location, client in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Once: asked again, a registry that refused says the same.
            if client.cancel_upload(UploadSession(location), timeout=remaining):
                closed += 1
        return closed


def push_blob(
    client: RegistryClient,
    blob: BlobSource,
    *,
    mount_from: Sequence[str] = (),
    chunk_size: int | None = None,
    on_progress: Progress | None = None,
    cancellation: Cancellation | None = None,
) -> BlobResult:
    """Make ``blob`` present in the client's repository; returns how, and what it cost."""
    progress = on_progress or (lambda _n: None)
    cancel = cancellation or Cancellation()
    cancel.check()
    if client.has_blob(blob.digest, blob.size):
        progress(blob.size)
        return BlobResult(blob.digest, blob.size, Outcome.SKIPPED, 0)
    for source in mount_from:
        if source == client.repository.path:
            continue
        session = client.start_upload(mount=blob.digest, from_repository=source)
        if session is None:
            progress(blob.size)
            return BlobResult(blob.digest, blob.size, Outcome.MOUNTED, 0)
        # The registry opened a normal session instead of mounting: use it.
        sent = _upload(client, blob, session, chunk_size, progress, cancel)
        return BlobResult(blob.digest, blob.size, Outcome.UPLOADED, sent)
    session = client.start_upload()
    assert session is not None
    sent = _upload(client, blob, session, chunk_size, progress, cancel)
    return BlobResult(blob.digest, blob.size, Outcome.UPLOADED, sent)


class GrowingSource(Protocol):
    """A blob still being written (a layer being built): readable as it grows, its digest known
    only once it is complete."""

    @property
    def digest(self) -> Digest | None: ...
    @property
    def failed(self) -> bool: ...
    def wait(self, beyond: int, timeout: float) -> int: ...
    def open(self) -> BinaryIO: ...


class SourceAbandoned(Exception):
    """The blob being streamed will never be complete (its build failed)."""


def stream_growing(
    client: RegistryClient,
    source: GrowingSource,
    *,
    on_progress: Progress | None = None,
    cancellation: Cancellation | None = None,
) -> BlobResult | None:
    """Upload a blob while it is being written: one ``PATCH`` whose body follows the file as
    it grows (sent with chunked transfer encoding, as its length is not known yet), then the
    closing ``PUT`` with the digest, known by then.

    Speculative, so best effort: None when anything goes wrong (the registry refuses a body of
    unknown length, the connection breaks, the build fails), with the session cancelled; the
    caller then pushes the finished blob the usual way. Only a cancellation is raised.
    """
    progress = on_progress or (lambda _n: None)
    cancel = cancellation or Cancellation()
    cancel.check()
    body: _Following | None = None
    try:
        session = client.start_upload()
        assert session is not None
    except RegistryError as exc:
        log.info("could not stream a blob while it is built (%s)", exc)
        return None
    tracked = _Tracked(client, cancel, session)
    try:
        body = _Following(source, progress, cancel)
        what = "uploading a layer while it is built"
        with cancel.sending(session):
            response = client.send(
                "PATCH",
                session.location,
                what=what,
                content=body,
                headers={"Content-Type": "application/octet-stream"},
            )
            if response.status_code != 202:
                raise client.error(response, what)
            location = client.absolute(response.headers.get("location") or session.location)
            # Cancelled meanwhile: the body ended early, and this session (in the state the
            # registry just gave) is deleted here, before the cancellation stops waiting.
            tracked.replace(UploadSession(location))
        cancel.check()  # a body that ended early is never committed
        digest = source.digest
        if body.abandoned or digest is None:
            raise SourceAbandoned("the layer's build failed")
        blob = BlobSource(digest, body.sent, source.open)
        _commit(client, blob, location, f"uploading blob {digest}")
        tracked.done()
        return BlobResult(digest, body.sent, Outcome.UPLOADED, body.sent)
    except (RegistryError, SourceAbandoned, OSError) as exc:
        if isinstance(exc, UploadCancelled):
            raise
        cancel.check()
        log.info("streaming a blob while it is built failed (%s); it goes up once built", exc)
        if body is not None:
            progress(-body.sent)
        tracked.done()
        client.cancel_upload(tracked.session, timeout=5.0)
        return None


class _Following:
    """A request body that follows a growing blob from its start until it is complete."""

    PIECE = 1 << 20
    POLL = 0.1  # seconds between looks at the cancellation while waiting for the writer

    def __init__(self, source: GrowingSource, progress: Progress, cancel: Cancellation) -> None:
        self.source = source
        self.progress = progress
        self.cancel = cancel
        self.sent = 0
        self.abandoned = False

    def __iter__(self) -> Iterator[bytes]:
        # Iterable again from the start: the auth flow re-sends the body after a token refresh.
        self.progress(-self.sent)
        self.sent = 0
        with self.source.open() as handle:
            while True:
                if self.cancel.cancelled:
                    # Ended cleanly, not broken off: the registry then answers with the
                    # session's state, and lets it be deleted.
                    return
                # Complete before the size is read: then that size is the final one.
                complete = self.source.digest is not None
                available = self.source.wait(self.sent, 0 if complete else self.POLL)
                if self.source.failed:
                    # End the body cleanly rather than break the connection: the registry then
                    # knows where the session stands, and lets it be cancelled.
                    self.abandoned = True
                    return
                if available > self.sent:
                    data = handle.read(min(self.PIECE, available - self.sent))
                    if not data:
                        raise SourceAbandoned("the layer's file is shorter than written")
                    self.sent += len(data)
                    self.progress(len(data))
                    self.cancel.progressed()
                    yield data
                elif complete:
                    return


def streams_whole_blobs(client: RegistryClient, chunk_size: int | None) -> bool:
    """True if a large blob may go up in one request (so also one of unknown length, as
    ``stream_growing`` sends): not where chunks were asked for or the registry caps them."""
    return chunk_size is None and client.repository.registry not in CHUNK_LIMITS


def _chunk_size(client: RegistryClient, requested: int | None, blob_size: int) -> int:
    size = requested or blob_size
    limit = CHUNK_LIMITS.get(client.repository.registry)
    return max(1, min(size, limit) if limit else size)


def _upload(
    client: RegistryClient,
    blob: BlobSource,
    session: UploadSession,
    chunk_size: int | None,
    progress: Progress,
    cancel: Cancellation,
) -> int:
    chunk = _chunk_size(client, chunk_size, blob.size)
    tracked = _Tracked(client, cancel, session)
    try:
        if blob.size <= min(chunk, MONOLITHIC_MAX):
            return _monolithic(client, blob, tracked, progress, cancel)
        return _chunked(client, blob, tracked, chunk, progress, cancel)
    except CorruptBlob:
        # A cache fault, not the registry's: nothing of it is committed, its session goes
        # (bounded), and the caller rebuilds the blob. Never retried here.
        client.cancel_upload(tracked.session, timeout=1.0)
        raise
    finally:
        tracked.done()


class _Tracked:
    """The upload's current session, known to the cancellation while it is open."""

    def __init__(self, client: RegistryClient, cancel: Cancellation, session: UploadSession):
        self.client = client
        self.cancel = cancel
        self.session = session
        cancel.opened(client, session)

    def replace(self, session: UploadSession) -> None:
        self.cancel.closed(self.session)
        self.session = session
        self.cancel.opened(self.client, session)

    def done(self) -> None:
        self.cancel.closed(self.session)


def _monolithic(
    client: RegistryClient,
    blob: BlobSource,
    tracked: _Tracked,
    progress: Progress,
    cancel: Cancellation,
) -> int:
    with blob.open() as handle:
        data = handle.read()
    _check_digest(blob, data)
    what = f"uploading blob {blob.digest}"
    failures = 0
    while True:
        cancel.check()
        session = tracked.session
        try:
            with cancel.sending(session):
                response = client.send(
                    "PUT",
                    _with_digest(session.location, blob.digest),
                    what=what,
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
            if response.status_code not in (201, 204):
                raise client.error(response, what)
            break
        except RegistryError as exc:
            cancel.check()
            failures += 1
            if failures > RESUME_ATTEMPTS or not retryable(exc):
                raise
            cancel.check_stall(client.host, exc)
            log.info("uploading %s failed (%s); trying again", blob.digest, exc)
            cancel.wait(_backoff(failures, exc))
            if client.has_blob(blob.digest, blob.size):
                break  # it arrived; only the answer was lost
            tracked.replace(_new_session(client))
    progress(len(data))
    cancel.progressed()
    return len(data)


def _chunked(
    client: RegistryClient,
    blob: BlobSource,
    tracked: _Tracked,
    chunk: int,
    progress: Progress,
    cancel: Cancellation,
) -> int:
    """PATCH the blob in requests of at most ``chunk`` bytes (the whole blob where the registry
    allows it), each body streamed from the file: memory stays at one read buffer."""
    what = f"uploading blob {blob.digest}"
    location = tracked.session.location
    offset = 0
    furthest = 0  # the most the registry has ever held of this blob, in any session
    sent = 0
    failures = 0
    hasher = _IncrementalCheck(blob)
    with blob.open() as handle:
        while offset < blob.size:
            cancel.check()
            length = min(chunk, blob.size - offset)
            end = offset + length - 1
            body = _Slice(handle, offset, length, hasher, progress, cancel)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
            if length != blob.size:
                # A chunk; the whole blob in one request is a "streamed" upload, sent without a
                # range as Docker does (some registries refuse a range there).
                headers["Content-Range"] = f"{offset}-{end}"
            try:
                with cancel.sending(UploadSession(location)):
                    response = client.send(
                        "PATCH", location, what=what, content=body, headers=headers
                    )
                if response.status_code == 416:
                    raise ProtocolError(f"{client.host} refused chunk {offset}-{end} (416)")
                if response.status_code != 202:
                    raise client.error(response, what)
            except RegistryError as exc:
                progress(-body.sent)
                cancel.check()
                failures += 1
                if failures > RESUME_ATTEMPTS or not retryable(exc):
                    raise
                cancel.check_stall(client.host, exc)
                log.info("chunk %d-%d of %s failed (%s); resuming", offset, end, blob.digest, exc)
                cancel.wait(_backoff(failures, exc))
                resumed = _resume_point(client, location, offset)
                if resumed is None:
                    # The session is gone (Distribution drops one whose chunk broke off midway,
                    # as its state no longer matches the data): start again in a new one.
                    tracked.replace(_new_session(client))
                    resumed = 0, tracked.session.location
                elif resumed[1] != location:
                    tracked.replace(UploadSession(resumed[1]))
                progress(resumed[0] - offset)
                offset, location = resumed
                hasher.seek(offset)
                continue
            if end + 1 > furthest:
                # New ground: the budget is for failures in a row. A chunk sent again after a
                # restart from zero is not progress, or a chunk that always breaks would loop.
                furthest = end + 1
                failures = 0
            next_location = client.absolute(response.headers.get("location") or location)
            if next_location != location:
                location = next_location
                tracked.replace(UploadSession(location))
            sent += length
            offset = end + 1
    hasher.verify()
    cancel.check()
    _commit(client, blob, location, what)
    return sent


class _Slice:
    """A request body: ``length`` bytes of the blob from ``offset``, read in small pieces,
    hashed and reported as they go, and stopped at once by a cancellation."""

    PIECE = 1 << 20

    def __init__(
        self,
        handle: BinaryIO,
        offset: int,
        length: int,
        hasher: _IncrementalCheck,
        progress: Progress,
        cancel: Cancellation,
    ) -> None:
        self.handle = handle
        self.offset = offset
        self.length = length
        self.hasher = hasher
        self.progress = progress
        self.cancel = cancel
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        # Iterable again from the start: the auth flow re-sends the body after a token refresh.
        self.progress(-self.sent)
        self.sent = 0
        self.handle.seek(self.offset)
        while self.sent < self.length:
            # Not stopped by a cancellation: a body of declared length that breaks off leaves a
            # session the registry can no longer delete. The cancellation gives it a moment to
            # finish, then breaks the connection itself.
            data = self.handle.read(min(self.PIECE, self.length - self.sent))
            if not data:
                raise CorruptBlob(self.hasher.blob.digest)  # shorter than its digest says
            # The hasher takes only what continues its position, so a re-sent part counts once.
            self.hasher.feed(self.offset + self.sent, data)
            self.sent += len(data)
            self.progress(len(data))
            self.cancel.progressed()
            yield data


def _commit(client: RegistryClient, blob: BlobSource, location: str, what: str) -> None:
    """Close a chunked upload; a lost answer to it is found out with a ``HEAD``."""
    try:
        response = client.send(
            "PUT",
            _with_digest(location, blob.digest),
            what=what,
            headers={"Content-Length": "0"},
            # The registry verifies and moves the whole blob before it answers.
            answer_budget=COMMIT_BUDGET * client.options.read_timeout,
        )
        if response.status_code in (201, 204):
            return
        error = client.error(response, what)
    except RegistryError as exc:
        error = exc
    # A retried PUT finds the session closed (404) when the first one did commit the blob.
    if not client.has_blob(blob.digest, blob.size):
        raise error


# A registry that forgot an upload session says so with these codes (404 or 400).
_SESSION_LOST = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})


def retryable(exc: RegistryError) -> bool:
    """Failures another attempt can get past: the network, the server, a lost session."""
    if isinstance(exc, OversizedAnswer | DigestMismatch | UploadStalled):
        return False  # asked again, the registry says the same; or the time is up
    if isinstance(exc, Unreachable | ServerError) or exc.code in _SESSION_LOST:
        return True
    # A broken conversation is worth another try; any other 4xx is the registry's last word.
    return isinstance(exc, ProtocolError) and exc.status is None


def _backoff(failures: int, exc: RegistryError) -> float:
    """Exponential, but never shorter than what the registry asked for (capped at a minute)."""
    wait = min(0.25 * 2**failures, 5.0)
    if exc.retry_after is not None:
        wait = max(wait, min(exc.retry_after, 60.0))
    return float(wait)


def _new_session(client: RegistryClient) -> UploadSession:
    session = client.start_upload()
    assert session is not None  # no mount was asked for: a session, or an error
    return session


def _with_digest(location: str, digest: Digest) -> str:
    # Added to the query, never replacing it: the location carries the session's state.
    return str(httpx.URL(location).copy_add_param("digest", str(digest)))


def _resume_point(client: RegistryClient, location: str, offset: int) -> tuple[int, str] | None:
    """Ask the registry how much of the upload it holds (``GET`` -> 204 + ``Range: 0-N``).

    None when the registry no longer knows the session; the same point when it cannot be asked.
    """
    try:
        response = client.send("GET", location, what="checking an upload's progress")
    except RegistryError:
        return offset, location
    if response.status_code != 204:
        return None
    held = response.headers.get("range", "")
    new_location = client.absolute(response.headers.get("location") or location)
    try:
        last = int(held.rsplit("-", 1)[1]) if "-" in held else -1
    except ValueError:
        return None
    # Distribution says "0-0" for an empty upload as for a 1-byte one: resending 1 byte is free.
    return (0 if last == 0 else last + 1), new_location


class _IncrementalCheck:
    """Hashes the chunks as they go, so a blob that changed on disk is never committed."""

    def __init__(self, blob: BlobSource) -> None:
        import hashlib

        self.blob = blob
        self._new = hashlib.sha256
        self.hash = hashlib.sha256()
        self.position = 0

    def feed(self, offset: int, data: bytes) -> None:
        if offset == self.position:
            self.hash.update(data)
            self.position += len(data)

    def seek(self, offset: int) -> None:
        if offset != self.position:
            # Rare (the registry lost data, or kept a chunk whose answer was lost): re-hash
            # from the start up to the offset.
            self.hash = self._new()
            self.position = 0
            with self.blob.open() as handle:
                remaining = offset
                while remaining:
                    data = handle.read(min(remaining, 1 << 20))
                    if not data:
                        break
                    self.hash.update(data)
                    remaining -= len(data)
                    self.position += len(data)

    def verify(self) -> None:
        if self.hash.hexdigest() != self.blob.digest.hex:
            raise CorruptBlob(self.blob.digest)


def _check_digest(blob: BlobSource, data: bytes) -> None:
    if Digest.of(data) != blob.digest:
        raise CorruptBlob(blob.digest)


__all__ = [
    "BlobResult",
    "BlobSource",
    "Cancellation",
    "CorruptBlob",
    "GrowingSource",
    "Outcome",
    "UploadCancelled",
    "UploadStalled",
    "push_blob",
    "stream_growing",
    "streams_whole_blobs",
]
