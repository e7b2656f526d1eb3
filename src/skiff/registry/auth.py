"""The registry's 401 -> credentials or token -> retry dance, as an ``httpx.Auth`` flow.

Every request made through a ``RegistryClient`` passes through ``RegistryAuth``: it attaches a
cached Basic header or Bearer token up front when the host's challenge is known, and on a 401 it
reads the challenge, fetches a token for the scopes needed (refreshing an expired one) and sends
the request once more. Push logic never handles authentication itself.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import httpx

from skiff.auth.credentials import ANONYMOUS, Credentials
from skiff.reference import is_loopback_host
from skiff.registry.challenge import Challenge, parse_challenges
from skiff.registry.errors import InsecureTransport, ProtocolError, TokenRejected

# (scheme, host, port): where credentials may go. Docker, containerd and go-containerregistry
# send the registry's credentials to its own origin only, and drop them on any other (storage
# that an upload Location or a redirect names, e.g. S3 or a CDN).
Origin = tuple[str, str, int]
CredentialLookup = Callable[[str], Credentials]

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token server does not say (distribution spec)
REFRESH_MARGIN = 10.0  # refresh a token this long before it expires, not mid-request


@dataclass(frozen=True)
class Token:
    """A bearer token and what the token server says it allows."""

    value: str
    expires_at: float
    # repository name -> actions granted, read from the JWT ``access`` claim; None when the token
    # is opaque (GHCR) and so proves nothing either way.
    access: dict[str, frozenset[str]] | None

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - REFRESH_MARGIN

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at:.0f}, access={self.access!r})"


def origin_of(url: httpx.URL) -> Origin:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


def _basic_header(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def decode_access_claim(token: str) -> dict[str, frozenset[str]] | None:
    """The ``access`` claim of a Docker-style JWT, or None if the token is not such a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("access"), list):
        return None
    granted: dict[str, frozenset[str]] = {}
    for entry in claims["access"]:
        if not isinstance(entry, dict) or entry.get("type") != "repository":
            continue
        name, actions = entry.get("name"), entry.get("actions")
        if isinstance(name, str) and isinstance(actions, list):
            granted[name] = granted.get(name, frozenset()) | frozenset(
                a for a in actions if isinstance(a, str)
            )
    return granted


class RegistryAuth(httpx.Auth):
    """Basic and Bearer registry authentication with token caching and refresh.

    ``scopes`` are the token scopes every request of this client needs, e.g.
    ``repository:alice/model:push,pull`` (push first: some token servers read only the first).
    One instance is shared by the threads of a push; its token cache is guarded by a lock.
    """

    def __init__(
        self,
        host: str,
        credentials: Credentials,
        scopes: Sequence[str],
        *,
        insecure_hosts: frozenset[str] = frozenset(),
        credentials_for: CredentialLookup | None = None,
        origin: Origin | None = None,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.scopes = tuple(scopes)
        # The registry's origin, known once the client found its API (https or http).
        self.origin = origin
        # Credentials the user has for another host that asks for them (None: none at all).
        self.credentials_for = credentials_for
        self._foreign: dict[Origin, RegistryAuth] = {}
        # Hosts the user declared insecure (SKIFF_INSECURE_REGISTRIES) may be reached over plain
        # HTTP, but unlike Docker, skiff never sends them credentials that way: anyone on the
        # path could read them. Kept to name the setting in messages.
        self.insecure_hosts = frozenset(h.lower() for h in insecure_hosts)
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    # -- what callers may ask -------------------------------------------------------------

    def token_for(self, scopes: Sequence[str] | None = None) -> Token | None:
        with self._lock:
            return self._tokens.get(self._key(scopes))

    @property
    def scheme(self) -> str:
        """ "bearer", "basic" or "none": what the registry asked for, once it asked."""
        return self.challenge.scheme if self.challenge else "none"

    # -- the flow ---------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        extra = _scopes_of(request)
        owner = self._owner(request.url)
        sent = owner._authorize(request, extra if owner is self else (), now=time.time())
        response = yield request
        if response.status_code != 401:
            return
        asked = response.request  # the last hop of any redirects: who asks for credentials
        if self._owner(asked.url) is not owner:
            # Redirected to another origin, which wants credentials of its own: answer it
            # there, with what the user has for that host, never with the registry's.
            owner, request, sent = self._owner(asked.url), asked, "nothing"
        yield from owner._answer(request, response, extra if owner is self else (), sent)

    def _owner(self, url: httpx.URL) -> RegistryAuth:
        """Who authenticates a request to ``url``: this registry's flow for its own origin; for
        any other origin, a flow with the credentials the user has for that host (anonymous if
        none), created once per origin."""
        if self.origin is None or origin_of(url) == self.origin:
            return self
        key = origin_of(url)
        with self._lock:
            foreign = self._foreign.get(key)
            if foreign is None:
                netloc = _netloc(url)
                creds = self.credentials_for(netloc) if self.credentials_for else ANONYMOUS
                foreign = RegistryAuth(
                    netloc, creds, (), insecure_hosts=self.insecure_hosts, origin=key
                )
                self._foreign[key] = foreign
        return foreign

    def _answer(
        self, request: httpx.Request, response: httpx.Response, extra: tuple[str, ...], sent: str
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Answer a 401 of this flow's origin with its challenge: a token, or the password."""
        header = response.headers.get("www-authenticate")
        if not header:
            return
        challenges = parse_challenges(header, self.host)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            if not bearer.realm:
                raise ProtocolError(
                    f"{self.host} asked for a bearer token but named no token server (realm)"
                )
            self.challenge = bearer
            scopes = self._scopes(extra, bearer)
            token = yield from self._fetch_token(bearer, scopes)
            self._check_plain_http(request.url)
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request
        elif basic is not None:
            self.challenge = basic
            if sent == "basic" or self.credentials.anonymous or self.credentials.password is None:
                return
            self._check_plain_http(request.url)
            request.headers["Authorization"] = _basic_header(
                self.credentials.username or "", self.credentials.password
            )
            yield request

    def _authorize(self, request: httpx.Request, extra: tuple[str, ...], now: float) -> str:
        """Attach what we already know to work; returns what was attached."""
        if self.challenge is None:
            return "nothing"
        if self.challenge.scheme == "basic":
            if self.credentials.password is None:
                return "nothing"
            self._check_plain_http(request.url)
            request.headers["Authorization"] = _basic_header(
                self.credentials.username or "", self.credentials.password
            )
            return "basic"
        with self._lock:
            token = self._tokens.get(self._key(extra))
        if token is None or not token.fresh(now):
            return "nothing"
        if not _private_path(request.url):
            return "nothing"  # a token is a credential too: never over plain HTTP afar
        request.headers["Authorization"] = f"Bearer {token.value}"
        return "bearer"

    def _key(self, extra: Sequence[str] | None) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.scopes, *(extra or ()))))

    def _scopes(self, extra: tuple[str, ...], challenge: Challenge) -> tuple[str, ...]:
        scopes = list(self._key(extra))
        for scope in (challenge.scope or "").split():
            if scope not in scopes and not self.scopes:
                scopes.append(scope)
        return tuple(scopes)

    def _check_plain_http(self, url: httpx.URL) -> None:
        if _private_path(url):
            return
        raise InsecureTransport(
            f"refusing to send credentials for {self.host} over plain HTTP to {url.host}",
            "serve the registry over HTTPS (credentials over HTTP can be read by anyone on the "
            "network), or reach it through a tunnel to localhost",
        )

    def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...]
    ) -> Generator[httpx.Request, httpx.Response, Token]:
        try:
            realm = httpx.URL(challenge.realm or "")
        except httpx.InvalidURL:
            realm = httpx.URL()
        if realm.scheme not in ("http", "https") or not realm.host:
            raise ProtocolError(
                f"{self.host} named an unusable token service: realm={challenge.realm!r}",
                "the registry's authentication settings are broken; tell its operator",
            )
        creds = self.credentials
        if creds.registry_token:
            token = Token(creds.registry_token, time.time() + 3600, None)
            with self._lock:
                self._tokens[scopes] = token
            return token
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in scopes)
        if creds.identity_token:
            self._check_plain_http(realm)
            form = dict(params)
            form.update(
                grant_type="refresh_token",
                refresh_token=creds.identity_token,
                client_id="skiff",
                scope=" ".join(scopes),
            )
            token_request = httpx.Request("POST", realm, data=form)
        else:
            headers = {}
            if not creds.anonymous and creds.password is not None:
                self._check_plain_http(realm)
                headers["Authorization"] = _basic_header(creds.username or "", creds.password)
                params.append(("account", creds.username or ""))
            token_request = httpx.Request("GET", realm.copy_merge_params(params), headers=headers)
        response = yield token_request
        response.read()
        self.tokens_fetched += 1
        if response.status_code in (401, 403):
            who = f"as {creds.username!r}" if creds.username else "anonymously"
            raise TokenRejected(
                f"the token service of {self.host} refused to log in {who} "
                f"(HTTP {response.status_code})",
                "the username or password is wrong or has expired; log in again",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise ProtocolError(
                f"the token service of {self.host} ({realm.host}) answered HTTP "
                f"{response.status_code}",
                "the registry's authentication service is failing; try again later",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise ProtocolError(
                f"the token service of {self.host} ({realm.host}) answered without a token"
            )
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        token = Token(value, time.time() + float(lifetime), decode_access_claim(value))
        with self._lock:
            self._tokens[scopes] = token
        return token


def _scopes_of(request: httpx.Request) -> tuple[str, ...]:
    """Extra scopes a single request needs (a cross-repository mount needs pull on the source)."""
    extra = request.extensions.get("skiff_scopes", ())
    return tuple(extra)


def _private_path(url: httpx.URL) -> bool:
    """HTTPS, or plain HTTP that never leaves this machine."""
    return url.scheme != "http" or is_loopback_host(_netloc(url))


def _netloc(url: httpx.URL) -> str:
    host = url.host if ":" not in url.host else f"[{url.host}]"
    return f"{host}:{url.port}" if url.port else host
