"""How skiff reaches a registry: plain-HTTP policy, timeouts, retries, error translation.

The push logic never sees sockets or SSL errors: this module turns them into typed
``RegistryError``s that name the host, and a ``RetryTransport`` retries what is safe to retry.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
from collections.abc import Iterable

import httpx

from skiff import __version__
from skiff.registry.errors import ProtocolError, RegistryError, TLSFailure, Unreachable

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

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        replayable = isinstance(request.stream, httpx.ByteStream)
        attempts = self.options.attempts if replayable else 1
        delay = self.options.backoff
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self.inner.handle_request(request)
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError) as exc:
                # A request that broke off after it was sent may have been half applied: an
                # upload chunk cannot simply be sent again (the upload logic resumes it).
                unsent = isinstance(exc, httpx.ConnectError)
                if last or _is_permanent(exc) or not (unsent or request.method in _IDEMPOTENT):
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code in RETRY_STATUSES and not last:
                wait = retry_after(response) or delay
                if wait > self.options.max_retry_delay:
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
    if isinstance(exc, httpx.ConnectTimeout):
        return Unreachable(
            f"no answer from {_host_port(host)} within {options.connect_timeout:g} s",
            "check the host and port, and any firewall or proxy in between",
        )
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable(
            f"{host} stopped answering (timed out)",
            "the registry may be overloaded; try again",
        )
    if isinstance(exc, httpx.TooManyRedirects):
        return ProtocolError(
            f"{host} redirected too many times (a redirect loop)",
            "the registry or a proxy in front of it is misconfigured",
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return ProtocolError(f"{host} broke the HTTP protocol: {exc}")
    text = str(exc).lower()
    if "connection refused" in text:
        return _refused(host)
    return Unreachable(f"cannot talk to {_host_port(host)}: {exc or type(exc).__name__}")


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
