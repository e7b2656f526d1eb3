"""A Docker token server (https://distribution.github.io/distribution/spec/auth/token/) for tests.

Policy: user U may pull, push and delete `U/...` repositories and pull any other; anonymous
callers may pull repositories under one of the `public` prefixes and nothing else. Granted
actions are the requested ones intersected with the allowed ones; an empty grant still yields a
token, as the protocol says.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .certs import libtrust_key_id, new_ec_key, self_signed_cert, write_cert

OWNER_ACTIONS = frozenset({"pull", "push", "delete"})
READ_ACTIONS = frozenset({"pull"})


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer saw. Passwords and tokens are never kept."""

    method: str
    path: str
    service: str | None
    scopes: tuple[str, ...]
    user: str | None  # the identity claimed (Basic user, form username, or refresh-token owner)
    authorization: bool  # an Authorization header was present
    grant_type: str | None  # POST only
    offline: bool  # access_type=offline (a refresh token was asked for)
    status: int


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    actions: tuple[str, ...]

    def as_claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


class _AuthFailed(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unauthorized(message: str) -> _AuthFailed:
    return _AuthFailed(
        401, {"errors": [{"code": "UNAUTHORIZED", "message": message}], "details": message}
    )


@dataclass(eq=False)
class TokenIssuer:
    """Serve tokens on http://127.0.0.1:PORT/token; `stop()` when done (or use as a context)."""

    workdir: Path
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    public: tuple[str, ...] = ()
    service: str = "skiff-test-registry"
    issuer: str = "skiff-test-issuer"
    lifetime: int = 300  # seconds; mutable so a test can make short-lived tokens
    requests: list[TokenRequest] = field(default_factory=list, init=False, repr=False)
    tokens_issued: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = new_ec_key()
        self.key_id = libtrust_key_id(self._key.public_key())
        self.cert_path = write_cert(
            self.workdir / "token-signer.crt", self_signed_cert(self._key, self.issuer)
        )
        self._refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.realm = f"{self.url}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> TokenIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def registry_auth_config(self) -> dict[str, Any]:
        """The `auth:` section a registry needs to trust this issuer."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    # -- policy and minting ----------------------------------------------------------------

    def allowed(self, user: str | None, repository: str) -> frozenset[str]:
        if user is not None:
            return OWNER_ACTIONS if repository.startswith(f"{user}/") else READ_ACTIONS
        if any(repository.startswith(prefix) for prefix in self.public):
            return READ_ACTIONS
        return frozenset()

    def grant(self, user: str | None, scopes: Iterable[str]) -> list[Access]:
        granted: list[Access] = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue  # only repository scopes exist here; others are silently not granted
            name, requested = ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = self.allowed(user, name)
            actions = tuple(a for a in dict.fromkeys(requested) if a in allowed)
            if actions:
                granted.append(Access("repository", name, actions))
        return granted

    def mint(
        self,
        user: str | None,
        access: Iterable[Access],
        *,
        lifetime: int | None = None,
        issued_at: float | None = None,
        audience: str | None = None,
    ) -> str:
        """Sign a token directly (tests can forge expired or wrong-audience tokens with it)."""
        now = int(time.time() if issued_at is None else issued_at)
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": audience or self.service,
            "exp": now + (self.lifetime if lifetime is None else lifetime),
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [a.as_claim() for a in access],
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw 64-byte r||s form, not the DER that cryptography produces.
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"

    # -- request handling (called from server threads) --------------------------------------

    def _check_password(self, user: str, password: str) -> None:
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            raise _unauthorized("incorrect username or password")

    def _respond_token(self, user: str | None, scopes: list[str], offline: bool) -> dict[str, Any]:
        access = self.grant(user, scopes)
        token = self.mint(user, access)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "scope": " ".join(f"{a.type}:{a.name}:{','.join(a.actions)}" for a in access),
        }
        if offline and user is not None:
            refresh = secrets.token_urlsafe(24)
            with self._lock:
                self._refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        with self._lock:
            self.tokens_issued += 1
        return body

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def handle_get(self, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        params = parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split()]
        offline = params.get("offline_token", [""])[0] == "true"
        user: str | None = None
        status, body = 200, {}
        try:
            if authorization is not None:
                user, password = _decode_basic(authorization)
                self._check_password(user, password)
            body = self._respond_token(user, scopes, offline)
        except _AuthFailed as failure:
            status, body = failure.status, failure.body
        self._record(
            TokenRequest(
                method="GET",
                path="/token",
                service=params.get("service", [None])[0],
                scopes=tuple(scopes),
                user=user,
                authorization=authorization is not None,
                grant_type=None,
                offline=offline,
                status=status,
            )
        )
        return status, body

    def handle_post(self, form: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        params = {k: v[0] for k, v in parse_qs(form).items()}
        scopes = params.get("scope", "").split()
        grant_type = params.get("grant_type")
        offline = params.get("access_type") == "offline"
        user: str | None = params.get("username")
        status, body = 200, {}
        try:
            if grant_type == "password":
                self._check_password(user or "", params.get("password", ""))
            elif grant_type == "refresh_token":
                with self._lock:
                    user = self._refresh_tokens.get(params.get("refresh_token", ""))
                if user is None:
                    raise _AuthFailed(400, {"error": "invalid_grant"})
            else:
                raise _AuthFailed(400, {"error": "unsupported_grant_type"})
            body = self._respond_token(user, scopes, offline)
        except _AuthFailed as failure:
            status, body = failure.status, failure.body
        self._record(
            TokenRequest(
                method="POST",
                path="/token",
                service=params.get("service"),
                scopes=tuple(scopes),
                user=user,
                authorization=authorization is not None,
                grant_type=grant_type,
                offline=offline,
                status=status,
            )
        )
        return status, body


def _decode_basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("only Basic credentials are accepted here")
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("malformed Basic credentials") from None
    if not sep:
        raise _unauthorized("malformed Basic credentials")
    return user, password


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean; `issuer.requests` is the record

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 401:
                self.send_header("WWW-Authenticate", f'Basic realm="{issuer.realm}"')
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._send(404, {"error": "not found"})
                return
            self._send(*issuer.handle_get(url.query, self.headers.get("Authorization")))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(length).decode()
            if urlsplit(self.path).path != "/token":
                self._send(404, {"error": "not found"})
                return
            self._send(*issuer.handle_post(form, self.headers.get("Authorization")))

    return Handler
