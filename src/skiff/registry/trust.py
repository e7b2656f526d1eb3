"""TLS trust per registry host, and the settings that shape every connection.

Kept apart from the transport (and from httpx, slow to import): preflight starts loading the CA
store in the background as soon as it knows the host, and the load overlaps with the imports
that follow instead of delaying the first connection.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from skiff.reference import is_loopback_host

DEFAULT_CERTS_DIR = Path("/etc/docker/certs.d")
# Seconds a preflight or login may take in all, and an upload may go without progress
# (SKIFF_DEADLINE): a server that trickles a byte now and then cannot stretch them.
DEFAULT_DEADLINE = 60.0


@dataclass(frozen=True)
class TransportOptions:
    """Settings that shape every connection; ``from_env`` reads the documented variables."""

    insecure_hosts: frozenset[str] = frozenset()
    certs_dir: Path = DEFAULT_CERTS_DIR
    ca_file: Path | None = None
    connect_timeout: float = 2.5
    read_timeout: float = 30.0
    attempts: int = 3  # total tries of a retryable request
    backoff: float = 0.25  # first retry delay in seconds, doubled each time
    max_retry_delay: float = 10.0
    extra_headers: tuple[tuple[str, str], ...] = ()
    # The overall deadline of one client's work (a preflight, a login), in seconds from its
    # creation; None for an upload, which may rightly take hours: there the deadline is on the
    # time without progress (``stall_deadline``), enforced by the upload logic.
    deadline: float | None = DEFAULT_DEADLINE
    stall_deadline: float = DEFAULT_DEADLINE
    phase: str = "preflight"  # named in timeout messages: which part of the command waited

    @classmethod
    def from_env(cls, **overrides: object) -> TransportOptions:
        hosts = frozenset(
            h.strip().lower()
            for h in os.environ.get("SKIFF_INSECURE_REGISTRIES", "").split(",")
            if h.strip()
        )
        ca = os.environ.get("SSL_CERT_FILE")
        base = cls(insecure_hosts=hosts, ca_file=Path(ca) if ca else None)
        # The user's word beats a caller's default: SKIFF_TIMEOUT bounds every single wait,
        # SKIFF_DEADLINE a whole phase (or, in an upload, the time without progress).
        timeout = _seconds("SKIFF_TIMEOUT")
        if timeout is not None:
            overrides["read_timeout"] = timeout
            overrides["connect_timeout"] = min(timeout, base.connect_timeout)
        deadline = _seconds("SKIFF_DEADLINE")
        if deadline is not None:
            overrides["stall_deadline"] = deadline
            if overrides.get("deadline", base.deadline) is not None:
                overrides["deadline"] = deadline
        return _replace(base, overrides)

    def is_insecure(self, host: str) -> bool:
        """True if the user allowed plain HTTP and unverified TLS for this host."""
        return host.lower() in self.insecure_hosts

    def allows_plain_http(self, host: str) -> bool:
        return is_loopback_host(host) or self.is_insecure(host)


def _seconds(name: str) -> float | None:
    """A positive number of seconds from the environment; None when unset or not one (a typo
    must not turn every timeout off)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _replace(options: TransportOptions, overrides: dict[str, object]) -> TransportOptions:
    from dataclasses import replace

    return replace(options, **overrides)  # type: ignore[arg-type]


# What a context's trust depends on: nothing else of the options (timeouts differ between a
# preflight and an upload, and must not cost a second load of the system store).
_TrustKey = tuple[str, bool, Path | None, Path]


class _Loading:
    """One context being made (a Future without concurrent.futures, slow to import)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._context: ssl.SSLContext | None = None
        self._error: BaseException | None = None

    def set(self, context: ssl.SSLContext | None, error: BaseException | None) -> None:
        self._context, self._error = context, error
        self._done.set()

    def result(self) -> ssl.SSLContext:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._context is not None
        return self._context


_CONTEXTS: dict[_TrustKey, _Loading] = {}
_CONTEXTS_LOCK = threading.Lock()


def _trust_key(host: str, options: TransportOptions) -> _TrustKey:
    return (host, options.is_insecure(host), options.ca_file, options.certs_dir)


def ssl_context(host: str, options: TransportOptions) -> ssl.SSLContext:
    """The trust for one host: the system store (or SSL_CERT_FILE) plus Docker's certs.d for it.

    Loading the system store costs tens of milliseconds, a good part of a preflight's budget,
    and a push opens several clients: one context per host and trust settings serves them all.
    """
    return _context_future(host, options, background=False).result()


def prepare_ssl_context(host: str, options: TransportOptions) -> None:
    """Start loading the trust for ``host`` in a background thread, so that ``ssl_context``
    finds it ready. OpenSSL reads the CA bundle without holding the GIL: the load overlaps with
    whatever Python does meanwhile (imports, reading cog.yaml) instead of delaying the first
    connection. Any error is raised by ``ssl_context``, where it would have been anyway."""
    _context_future(host, options, background=True)


def _context_future(host: str, options: TransportOptions, *, background: bool) -> _Loading:
    key = _trust_key(host, options)
    with _CONTEXTS_LOCK:
        loading = _CONTEXTS.get(key)
        if loading is not None:
            return loading
        loading = _CONTEXTS[key] = _Loading()
    if background:
        threading.Thread(
            target=_fill, args=(loading, host, options), name="skiff-tls-trust", daemon=True
        ).start()
    else:
        _fill(loading, host, options)
    return loading


def _fill(loading: _Loading, host: str, options: TransportOptions) -> None:
    try:
        context = _new_ssl_context(host, options)
    except BaseException as exc:
        with _CONTEXTS_LOCK:  # not remembered: the next client tries again (a file may appear)
            _CONTEXTS.pop(_trust_key(host, options), None)
        loading.set(None, exc)
        return
    loading.set(context, None)


def _new_ssl_context(host: str, options: TransportOptions) -> ssl.SSLContext:
    if options.is_insecure(host):
        # Nothing is verified: loading the system store would only cost time.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if options.ca_file is not None:
        context = ssl.create_default_context(cafile=str(options.ca_file))
    else:
        context = ssl.create_default_context()
    host_dir = options.certs_dir / host
    if host_dir.is_dir():
        for ca in sorted(host_dir.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
    return context


def trust_hint(host: str, options: TransportOptions) -> str:
    return (
        f"if {host} uses a private CA, save the CA certificate as "
        f"{options.certs_dir / host / 'ca.crt'} or point SSL_CERT_FILE at it"
    )
