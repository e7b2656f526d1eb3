"""How skiff reaches a registry: plain-HTTP policy, timeouts, retries, error translation.

The push logic never sees sockets or SSL errors: this module turns them into typed
``RegistryError``s that name the host, and a ``RetryTransport`` retries what is safe to retry.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from skiff import __version__
from skiff.registry.errors import (
    OversizedAnswer,
    ProtocolError,
    RegistryError,
    TLSFailure,
    Unreachable,
)
from skiff.registry.redact import redact

# Trust and settings live apart from httpx, so that preflight can start loading the CA store
# before httpx is imported; they are re-exported here, where callers have always found them.
from skiff.registry.trust import DEFAULT_CERTS_DIR as DEFAULT_CERTS_DIR
from skiff.registry.trust import TransportOptions as TransportOptions
from skiff.registry.trust import prepare_ssl_context as prepare_ssl_context
from skiff.registry.trust import ssl_context as ssl_context
from skiff.registry.trust import trust_hint

USER_AGENT = f"skiff/{__version__}"
# What OpenSSL says when the server answered a TLS handshake in plain HTTP.
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class RetryTransport(httpx.BaseTransport):
    """Retries connection failures and 408/429/5xx answers, honouring Retry-After.

    Only requests whose body can be sent again are retried (no body, or bytes in memory); a
    streamed upload is retried by the upload logic, which knows how to resume it.
    """

    def __init__(self, inner: httpx.BaseTransport, options: TransportOptions) -> None:
        self.inner = inner
        self.options = options

    def _fits(self, wait: float) -> bool:
        """Whether a wait ends before the phase's deadline (a retry after it is pointless)."""
        deadline = getattr(self.inner, "deadline", None)
        return deadline is None or time.monotonic() + wait < deadline

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        replayable = isinstance(request.stream, httpx.ByteStream)
        attempts = self.options.attempts if replayable else 1
        delay = self.options.backoff
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self.inner.handle_request(request)
            except (
                httpx.ConnectError,
                httpx.ReadError,
                httpx.WriteError,
                httpx.RemoteProtocolError,
            ) as exc:
                # A request that broke off after it was sent may have been half applied: an
                # upload chunk cannot simply be sent again (the upload logic resumes it).
                unsent = isinstance(exc, httpx.ConnectError)
                if last or _is_permanent(exc) or not (unsent or request.method in _IDEMPOTENT):
                    raise
                if not self._fits(delay):
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code in RETRY_STATUSES and not last:
                wait = retry_after(response) or delay
                if wait > self.options.max_retry_delay or not self._fits(wait):
                    return response
                response.close()
                time.sleep(wait)
                delay *= 2
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.inner.close()


def _is_permanent(exc: Exception) -> bool:
    """Failures a retry cannot fix: refused connections, unknown hosts, TLS trust."""
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLError | socket.gaierror | ConnectionRefusedError):
            return True
    text = str(exc).lower()
    return "connection refused" in text or "name or service not known" in text


def retry_after(response: httpx.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (delta or HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def causes(exc: BaseException) -> Iterable[BaseException]:
    """The exception and what caused it, down to the socket or SSL error.

    httpx chains its own errors with ``from``, so their implicit ``__context__`` is only what
    was being handled when they were raised (e.g. the failed HTTPS attempt before a plain-HTTP
    fallback), not why they failed: following it would blame a redirect loop on TLS. httpcore
    raises its errors implicitly, so below httpx the context is the cause.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, httpx.HTTPError):
            current = current.__cause__
        else:
            current = current.__cause__ or current.__context__


def translate(exc: httpx.HTTPError, host: str, options: TransportOptions) -> RegistryError:
    """Turn an httpx failure into a RegistryError that names the host and says what to do."""
    target = _request_host(exc)
    if target is not None and target not in (_with_port(host, 443), _with_port(host, 80)):
        # The registry's token service (or the storage it redirected to) failed, not the
        # registry: name the host that failed, or users debug a registry that is fine.
        inner = translate(exc, target, options)
        hint = inner.hint
        if not isinstance(inner, TLSFailure):
            hint = f"the service {host} relies on is failing; try again later, or tell its operator"
        return type(inner)(
            f"{inner.message} ({target} is where {host} sent skiff, e.g. its token service)",
            hint,
            status=inner.status,
            code=inner.code,
        )
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            return TLSFailure(
                f"TLS certificate of {host} not trusted: {reason}",
                trust_hint(host, options),
            )
        if isinstance(cause, ssl.SSLError) and cause.reason in _PLAIN_HTTP_REASONS:
            # Only hosts on this machine are tried over plain HTTP unasked: say how to allow it.
            return TLSFailure(
                f"{host} answers plain HTTP, not HTTPS",
                "serve the registry over HTTPS, or, on a network you trust, allow plain HTTP "
                f"with SKIFF_INSECURE_REGISTRIES={host}",
            )
        if isinstance(cause, ssl.SSLError):
            return TLSFailure(
                f"TLS handshake with {host} failed: {cause.reason or cause}",
                f"check that {host} serves HTTPS on that port",
            )
        if isinstance(cause, socket.gaierror):
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
            return Unreachable(
                f"cannot resolve host {name}",
                "check the registry host name for typos, and your DNS or network connection",
            )
        if isinstance(cause, ConnectionRefusedError):
            return _refused(host)
    if isinstance(exc, AnswerTooLarge):
        return OversizedAnswer(
            f"{host} sent an answer larger than {exc.limit} bytes during the {options.phase}; "
            "skiff refused it without reading it all",
            "the registry (or a proxy in front of it) is broken or hostile; tell its operator",
        )
    if isinstance(exc, httpx.TimeoutException) and DEADLINE_MARK in str(exc):
        overall = f", {options.deadline:g} s in all (SKIFF_DEADLINE)" if options.deadline else ""
        return Unreachable(
            f"{host} did not answer in time during the {options.phase}: an answer may take "
            f"{options.read_timeout:g} s (SKIFF_TIMEOUT){overall}",
            "the registry is overloaded or sends its answer a trickle at a time; try again "
            "later, or raise SKIFF_TIMEOUT / SKIFF_DEADLINE",
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return Unreachable(
            f"no answer from {_host_port(host)} within {options.connect_timeout:g} s "
            f"during the {options.phase}",
            "check the host and port, and any firewall or proxy in between",
        )
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable(
            f"{host} stopped answering during the {options.phase} (nothing for "
            f"{options.read_timeout:g} s, SKIFF_TIMEOUT)",
            "the registry may be overloaded; try again, or raise SKIFF_TIMEOUT",
        )
    if isinstance(exc, httpx.TooManyRedirects):
        return ProtocolError(
            f"{host} redirected too many times (a redirect loop)",
            "the registry or a proxy in front of it is misconfigured",
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return ProtocolError(f"{host} broke the HTTP protocol: {redact(str(exc))}")
    text = str(exc).lower()
    if "connection refused" in text:
        return _refused(host)
    return Unreachable(
        f"cannot talk to {_host_port(host)}: {redact(str(exc)) or type(exc).__name__}"
    )


def _request_host(exc: httpx.HTTPError) -> str | None:
    """``HOST:PORT`` of the request that failed (the port always explicit), if known."""
    try:
        url = exc.request.url
    except RuntimeError:  # raised outside of a request
        return None
    if not url.host:
        return None
    name = f"[{url.host}]" if ":" in url.host else url.host
    return f"{name}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _with_port(host: str, default: int) -> str:
    return host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{default}"


def _refused(host: str) -> Unreachable:
    return Unreachable(
        f"connection to {_host_port(host)} refused",
        "is the registry running, and is the port right?",
    )


def _host_port(host: str) -> str:
    """``HOST:PORT`` with the port made explicit, as users need it to debug a connection."""
    if host.endswith("]") or ":" not in host.rsplit("]", 1)[-1]:
        return f"{host}:443"
    return host


# -- guards on every request: timeouts, deadlines, bounded answers, interruptible sockets ------

# Answers skiff reads into memory (manifests, indexes, token answers, error bodies) are JSON of
# a few KiB; Distribution refuses manifests over 4 MiB. Anything larger is refused unread.
ANSWER_MAX = 8 * 1024 * 1024
DEADLINE_MARK = "skiff: deadline passed"


class AnswerTooLarge(httpx.DecodingError):
    """An answer longer than its descriptor says, or than skiff ever reads into memory."""

    def __init__(self, limit: int, request: httpx.Request) -> None:
        super().__init__(f"answer larger than {limit} bytes", request=request)
        self.limit = limit


class _Waits(threading.local):
    """The deadline of the request this thread is in, read by the sockets below it."""

    at: float | None = None


_WAITS = _Waits()
# The socket each thread last used, so that a cancellation can break a request that is blocked
# in a send or a receive (the registry refuses to drop a session whose request is still open).
_ACTIVE: dict[int, _GuardedStream] = {}


def abort_requests_of(thread: int) -> bool:
    """Break the connection ``thread`` is using (its blocked send or receive fails at once)."""
    stream = _ACTIVE.get(thread)
    if stream is None:
        return False
    stream.abort()
    return True


class _GuardedStream(httpcore.NetworkStream):
    """A socket whose every wait ends by the current request's deadline, and which another
    thread can break."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def _timeout(self, timeout: float | None) -> tuple[float | None, bool]:
        _ACTIVE[threading.get_ident()] = self
        at = _WAITS.at
        if at is None:
            return timeout, False
        left = at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout(DEADLINE_MARK)
        return (left, True) if timeout is None or left < timeout else (timeout, False)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wait, capped = self._timeout(timeout)
        try:
            return self.inner.read(max_bytes, wait)
        except httpcore.ReadTimeout:
            if capped:
                raise httpcore.ReadTimeout(DEADLINE_MARK) from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        wait, capped = self._timeout(timeout)
        try:
            self.inner.write(buffer, wait)
        except httpcore.WriteTimeout:
            if capped:
                raise httpcore.WriteTimeout(DEADLINE_MARK) from None
            raise

    def abort(self) -> None:
        sock = self.inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for thread, stream in list(_ACTIVE.items()):
            if stream is self:
                _ACTIVE.pop(thread, None)
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait, _ = self._timeout(timeout)
        return _GuardedStream(self.inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        at = _WAITS.at
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout(DEADLINE_MARK)
            timeout = left if timeout is None else min(timeout, left)
        return _GuardedStream(
            self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def guarded_transport(context: ssl.SSLContext) -> httpx.HTTPTransport:
    """httpx's transport over sockets that honour skiff's deadlines and can be broken off."""
    transport = httpx.HTTPTransport(verify=context, retries=0)
    # httpx does not let a caller choose the network backend; its pool is rebuilt with ours,
    # with httpx's default limits.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        retries=0,
        network_backend=_GuardedBackend(),
    )
    return transport


class GuardTransport(httpx.BaseTransport):
    """Puts every request under skiff's limits, whoever made it (the auth flow's token
    requests included): a timeout on each wait, a whole-answer deadline that a server trickling
    a byte at a time cannot stretch, the phase's deadline, and a bound on the answer's size."""

    def __init__(
        self, inner: httpx.BaseTransport, options: TransportOptions, deadline: float | None
    ) -> None:
        self.inner = inner
        self.options = options
        self.deadline = deadline  # monotonic time the whole phase must end by, if it has one

    def _until(self, budget: float | None) -> float | None:
        ends = [t for t in (self.deadline,) if t is not None]
        if budget is not None:
            ends.append(time.monotonic() + budget)
        return min(ends) if ends else None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.extensions.get("timeout"):
            # A request built outside the client (a token request) carries no timeouts:
            # httpcore would wait forever.
            request.extensions["timeout"] = httpx.Timeout(
                self.options.read_timeout, connect=self.options.connect_timeout
            ).as_dict()
        budget = request.extensions.get("skiff_answer_budget", self.options.read_timeout)
        limit = request.extensions.get("skiff_limit", ANSWER_MAX)
        streamed_answer = bool(request.extensions.get("skiff_streamed_answer"))
        if isinstance(request.stream, httpx.ByteStream):
            at = self._until(budget)
        else:
            # A streamed body (a blob) may take hours to send: the answer's budget starts once
            # the body is sent.
            at = self._until(None)
            request.stream = _BodyThenAnswer(request.stream, self, budget)
        previous, _WAITS.at = _WAITS.at, at
        try:
            response = self.inner.handle_request(request)
        finally:
            at, _WAITS.at = _WAITS.at, previous
        # A HEAD's Content-Length is the size of what a GET would send (a blob's), not a body.
        length = "" if request.method == "HEAD" else response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            response.close()
            raise AnswerTooLarge(limit, request)
        response.stream = _BoundedAnswer(
            response.stream, limit, self._until(None) if streamed_answer else at, request
        )
        return response

    def close(self) -> None:
        self.inner.close()


class _BodyThenAnswer(httpx.SyncByteStream):
    """A request body that starts the answer's budget when its last byte has gone."""

    def __init__(self, inner: Any, guard: GuardTransport, budget: float | None) -> None:
        self.inner = inner
        self.guard = guard
        self.budget = budget

    def __iter__(self) -> Iterator[bytes]:
        yield from self.inner
        _WAITS.at = self.guard._until(self.budget)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class _BoundedAnswer(httpx.SyncByteStream):
    """An answer body read under its request's deadline, and cut off past ``limit`` bytes."""

    def __init__(self, inner: Any, limit: int, at: float | None, request: httpx.Request) -> None:
        self.inner = inner
        self.limit = limit
        self.at = at
        self.request = request

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        iterator = iter(self.inner)
        while True:
            previous, _WAITS.at = _WAITS.at, self.at
            try:
                chunk = next(iterator, None)
            finally:
                _WAITS.at = previous
            if chunk is None:
                return
            seen += len(chunk)
            if seen > self.limit:
                raise AnswerTooLarge(self.limit, self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()
