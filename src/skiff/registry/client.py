"""An OCI distribution client for one repository: ping, manifests, blobs, upload sessions.

``RegistryClient`` owns one httpx client whose transport retries what is safe and whose auth flow
(``RegistryAuth``) handles Basic and Bearer; every method returns values or raises a typed
``RegistryError`` naming the host.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx

from skiff.auth.credentials import ANONYMOUS, Credentials
from skiff.digest import Digest
from skiff.errors import InvalidInput
from skiff.reference import Repository
from skiff.registry.auth import RegistryAuth, origin_of
from skiff.registry.challenge import Challenge, parse_challenges
from skiff.registry.errors import (
    Denied,
    DigestMismatch,
    NotFound,
    ProtocolError,
    RegistryError,
    ServerError,
    Unauthorized,
)
from skiff.registry.redact import redact
from skiff.registry.transport import (
    ANSWER_MAX,
    USER_AGENT,
    GuardTransport,
    RetryTransport,
    TransportOptions,
    causes,
    guarded_transport,
    retry_after,
    ssl_context,
    translate,
)

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class Ping:
    """What ``GET /v2/`` said: where the API lives and how it wants to be authenticated."""

    base_url: str
    status: int
    challenges: tuple[Challenge, ...]


@dataclass(frozen=True)
class RemoteManifest:
    digest: Digest | None
    media_type: str
    size: int | None


@dataclass(frozen=True)
class UploadSession:
    """An open blob upload; ``location`` is absolute and carries the registry's session state."""

    location: str


@dataclass(frozen=True)
class RegistryErrorDetail:
    code: str
    message: str


class RegistryClient:
    """Talks to the registry that holds ``repository``, with the permissions ``actions`` need."""

    def __init__(
        self,
        repository: Repository,
        credentials: Credentials = ANONYMOUS,
        *,
        actions: Sequence[str] = ("push", "pull"),
        options: TransportOptions | None = None,
    ) -> None:
        self.repository = repository
        self.host = repository.api_host
        self.options = options or TransportOptions.from_env()
        if not actions and self.options.phase == "preflight":
            # A registry-wide client is a login's: its messages say so.
            self.options = replace(self.options, phase="login")
        self.credentials = credentials
        # No actions: a registry-wide client (login), whose tokens carry no repository scope.
        scopes = [repository.scope(*actions)] if actions else []
        self.auth = RegistryAuth(
            self.host,
            credentials,
            scopes,
            insecure_hosts=self.options.insecure_hosts,
            credentials_for=_user_credentials,
        )
        context = ssl_context(self.host, self.options)
        deadline = time.monotonic() + self.options.deadline if self.options.deadline else None
        self.guard = GuardTransport(guarded_transport(context), self.options, deadline)
        transport = RetryTransport(self.guard, self.options)
        self._http = httpx.Client(
            transport=transport,
            auth=self.auth,
            timeout=httpx.Timeout(self.options.read_timeout, connect=self.options.connect_timeout),
            follow_redirects=True,
            max_redirects=8,
            headers={"User-Agent": USER_AGENT, **dict(self.options.extra_headers)},
        )
        self._base: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base is None:
            self.ping()
        assert self._base is not None
        return self._base

    def url(self, path: str) -> str:
        return f"{self.base_url}/v2/{self.repository.path}/{path}"

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        scopes: Sequence[str] = (),
        stream: bool = False,
        limit: int = ANSWER_MAX,
        answer_budget: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request through auth and retries; transport failures become RegistryErrors.

        The answer's body is bounded by ``limit`` bytes (refused, unread, past it); unless
        ``stream``, it is read here, within the request's deadline (``answer_budget`` seconds,
        by default the read timeout, e.g. longer for the commit of a large blob).
        """
        extensions: dict[str, Any] = {"skiff_limit": limit}
        if scopes:
            extensions["skiff_scopes"] = tuple(scopes)
        if answer_budget is not None:
            extensions["skiff_answer_budget"] = answer_budget
        if stream:
            extensions["skiff_streamed_answer"] = True
        try:
            request = self._http.build_request(method, url, extensions=extensions, **kwargs)
            response = self._http.send(request, stream=stream)
            if not stream:
                response.read()
            return response
        except httpx.HTTPError as exc:
            raise translate(exc, self.host, self.options) from None
        except httpx.StreamError:
            # A streamed upload body cannot be sent twice: the registry asked to authenticate
            # again (or redirected) after it was sent. The upload logic starts that part again.
            raise ProtocolError(
                f"{self.host} asked for a streamed request to be sent again while {what}"
            ) from None
        except httpx.InvalidURL as exc:
            raise ProtocolError(
                f"{self.host} sent an invalid URL while {what}: {redact(str(exc))}"
            ) from None

    # -- the API -----------------------------------------------------------------------------

    def ping(self) -> Ping:
        """Find the API (HTTPS, or plain HTTP where allowed) and read its auth challenge."""
        response = self._probe()
        challenges: tuple[Challenge, ...] = ()
        if response.status_code == 401:
            header = response.headers.get("www-authenticate")
            if not header:
                raise ProtocolError(
                    f"{self.host} answered 401 without saying how to authenticate "
                    "(no WWW-Authenticate header)",
                    "the registry or a proxy in front of it is misconfigured",
                )
            challenges = tuple(parse_challenges(header, self.host))
            if not any(c.scheme in ("basic", "bearer") for c in challenges):
                schemes = ", ".join(c.scheme for c in challenges)
                raise ProtocolError(
                    f"{self.host} asks for an authentication scheme skiff does not speak: {schemes}"
                )
            self.auth.challenge = next(c for c in challenges if c.scheme in ("bearer", "basic"))
        elif response.status_code == 200 and "html" in response.headers.get("content-type", ""):
            # A web server or captive portal, not a registry: fail here, not at the write probe.
            raise ProtocolError(
                f"{self.host} is not a registry: GET /v2/ answered with a web page",
                "check the host name: it should be the registry, not a web site",
                status=200,
            )
        elif response.status_code == 404:
            raise ProtocolError(
                f"{self.host} does not serve the registry API (GET /v2/ answered 404)",
                "check the host name: it should be the registry, not a web site",
                status=404,
            )
        elif response.status_code >= 500:
            raise ServerError(
                f"{self.host} is failing (GET /v2/ answered HTTP {response.status_code})",
                "the registry has an internal problem; try again later",
                status=response.status_code,
            )
        elif response.status_code == 429:
            raise ServerError(
                f"{self.host} is rate-limiting this machine (GET /v2/ answered HTTP 429)",
                "wait a while and try again; on Docker Hub, logging in raises the limit",
                status=429,
            )
        elif response.status_code != 200:
            raise ProtocolError(
                f"{self.host} answered GET /v2/ with HTTP {response.status_code}, not 200 or 401",
                "check that the host is an OCI registry",
                status=response.status_code,
            )
        assert self._base is not None
        return Ping(self._base, response.status_code, challenges)

    def _probe(self) -> httpx.Response:
        https = f"https://{self.host}"
        if self.options.allows_plain_http(self.host):
            try:
                response = self._get_unauthenticated(f"{https}/v2/")
            except httpx.ConnectError as exc:
                if not _speaks_plain_http(exc):
                    raise translate(exc, self.host, self.options) from None
            except httpx.HTTPError as exc:
                raise translate(exc, self.host, self.options) from None
            else:
                self._base = https
                self.auth.origin = origin_of(httpx.URL(self._base))
                return response
            # The server speaks plain HTTP. Asked here, outside the except block, so that a
            # failure over HTTP is not chained to (and reported as) the TLS attempt's error.
            self._base = f"http://{self.host}"
            self.auth.origin = origin_of(httpx.URL(self._base))
            return self._raw_ping()
        self._base = https
        self.auth.origin = origin_of(httpx.URL(self._base))
        return self._raw_ping()

    def _raw_ping(self) -> httpx.Response:
        try:
            return self._get_unauthenticated(f"{self._base}/v2/")
        except httpx.HTTPError as exc:
            raise translate(exc, self.host, self.options) from None

    def _get_unauthenticated(self, url: str) -> httpx.Response:
        response = self._http.get(url, auth=None)
        response.read()
        return response

    def head_manifest(self, identifier: str) -> RemoteManifest | None:
        """The manifest's digest and type if ``identifier`` (tag or digest) exists, else None."""
        what = f"looking up {self.repository.path}:{identifier}"
        response = self.send(
            "HEAD",
            self.url(f"manifests/{identifier}"),
            what=what,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, what)
        return RemoteManifest(
            _digest_header(response),
            response.headers.get("content-type", ""),
            _int_header(response, "content-length"),
        )

    def get_manifest(
        self,
        identifier: str,
        accept: Sequence[str] = MANIFEST_TYPES,
        *,
        size: int | None = None,
    ) -> tuple[bytes, str]:
        """The manifest bytes and media type; NotFound if it does not exist.

        Never more than ``size`` bytes (a descriptor's), or than ``ANSWER_MAX`` when no size is
        known; asked by digest, the bytes must have that digest, whatever the registry says.
        """
        what = f"reading manifest {self.repository.path}:{identifier}"
        response = self.send(
            "GET",
            self.url(f"manifests/{identifier}"),
            what=what,
            headers={"Accept": ", ".join(accept)},
            limit=ANSWER_MAX if size is None else min(size, ANSWER_MAX),
        )
        if response.status_code != 200:
            raise self.error(response, what)
        body = response.content
        if identifier.startswith("sha256:") and Digest.of(body) != Digest.parse(identifier):
            raise DigestMismatch(
                f"{self.host} answered {what} with bytes whose digest is {Digest.of(body)}",
                "the registry (or a proxy in front of it) corrupts what it serves",
            )
        return body, response.headers.get("content-type", "").split(";")[0].strip()

    def put_manifest(self, identifier: str, body: bytes, media_type: str) -> Digest:
        what = f"writing manifest {self.repository.path}:{identifier}"
        response = self.send(
            "PUT",
            self.url(f"manifests/{identifier}"),
            what=what,
            content=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201, 202):
            raise self.error(response, what)
        # The digest skiff pins is the one of the bytes it sent, computed here; the registry's
        # word is only checked against it.
        ours = Digest.of(body)
        said = response.headers.get("docker-content-digest")
        if said and _digest_header(response) != ours:
            raise DigestMismatch(
                f"{self.host} stored the manifest of {self.repository.path}:{identifier} under "
                f"the digest {said[:80]}, but the manifest skiff sent is {ours}",
                "the registry (or a proxy in front of it) changed the manifest; do not use this "
                "tag, and tell the registry's operator",
            )
        return ours

    def has_tags(self) -> bool:
        """True if the repository holds at least one tag; False for a new or empty one.

        ``GET /v2/NAME/tags/list?n=1``: the registry answers 404 (NAME_UNKNOWN) for a repository
        it has never seen, and an empty list (or ``null``) for one without tags.
        """
        what = f"listing the tags of {self.repository.path}"
        response = self.send("GET", self.url("tags/list"), what=what, params={"n": "1"})
        if response.status_code == 404 and any(
            e.code == "NAME_UNKNOWN" for e in parse_error_body(response)
        ):
            return False
        if response.status_code != 200:
            raise self.error(response, what)
        try:
            tags = response.json().get("tags")
        except (ValueError, AttributeError):
            raise ProtocolError(f"{self.host} sent an unreadable tag list while {what}") from None
        return bool(tags)

    def head_blob(self, digest: Digest) -> int | None:
        """The blob's size if the repository has it (-1 when the registry does not say), else
        None."""
        what = f"looking up blob {digest}"
        response = self.send("HEAD", self.url(f"blobs/{digest}"), what=what)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, what)
        size = _int_header(response, "content-length")
        return -1 if size is None else size

    def has_blob(self, digest: Digest, size: int) -> bool:
        """True only if the repository has the blob at its size: a registry that answers
        another size holds something else (a truncated or different blob), to be uploaded."""
        return self.head_blob(digest) == size

    @contextmanager
    def get_blob(self, digest: Digest, size: int) -> Iterator[Iterator[bytes]]:
        """A streamed blob download (following redirects to storage): its body in pieces,
        never more than ``size`` bytes (the descriptor's): a registry that serves more is cut
        off there, before the excess reaches the disk."""
        what = f"downloading blob {digest}"
        response = self.send("GET", self.url(f"blobs/{digest}"), what=what, stream=True, limit=size)
        try:
            if response.status_code != 200:
                self._read_error_body(response, what)
                raise self.error(response, what)
            yield self._pieces(response, what)
        finally:
            response.close()

    def _pieces(self, response: httpx.Response, what: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(1 << 20)
        except httpx.HTTPError as exc:
            raise translate(exc, self.host, self.options) from None

    def _read_error_body(self, response: httpx.Response, what: str) -> None:
        try:
            response.read()
        except httpx.HTTPError as exc:
            raise translate(exc, self.host, self.options) from None

    def start_upload(
        self, mount: Digest | None = None, from_repository: str | None = None
    ) -> UploadSession | None:
        """Open an upload session; with ``mount``, try a cross-repository mount first.

        Returns None when the mount succeeded (the blob is now in this repository), else the
        session to upload into (registries that cannot mount open a normal session instead).
        """
        params: dict[str, str] = {}
        scopes: tuple[str, ...] = ()
        if mount is not None and from_repository:
            params = {"mount": str(mount), "from": from_repository}
            scopes = (f"repository:{from_repository}:pull",)
        what = f"starting an upload to {self.repository.path}"
        response = self.send(
            "POST",
            self.url("blobs/uploads/"),
            what=what,
            params=params,
            scopes=scopes,
            headers={"Content-Length": "0"},
        )
        if response.status_code == 201 and mount is not None:
            return None
        if response.status_code != 202:
            raise self.error(response, what)
        location = response.headers.get("location")
        if not location:
            raise ProtocolError(
                f"{self.host} opened an upload session without a Location header",
                status=response.status_code,
            )
        return UploadSession(self.absolute(location))

    def cancel_upload(
        self, session: UploadSession, scopes: Sequence[str] = (), timeout: float | None = None
    ) -> bool:
        """Best effort: registries may refuse (GHCR: 405) and sessions expire anyway.

        ``scopes`` may add e.g. the ``delete`` action that the reference registry wants;
        ``timeout`` bounds it when the push is being interrupted.
        """
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self.send(
                "DELETE", session.location, what="cancelling an upload", scopes=scopes, **extra
            )
        except RegistryError:
            return False
        return response.status_code in (200, 202, 204)

    # -- errors ------------------------------------------------------------------------------

    def error(self, response: httpx.Response, what: str) -> RegistryError:
        """A typed error for an unexpected answer, in the registry's own words when it gave any."""
        details = parse_error_body(response)
        said = "; ".join(f"{d.code}: {d.message}" if d.message else d.code for d in details)
        status = response.status_code
        code = details[0].code if details else None
        suffix = f" ({said})" if said else ""
        base = f"{self.host} refused {what}: HTTP {status}{suffix}"
        if status == 401:
            header = response.headers.get("www-authenticate", "")
            if "insufficient_scope" in header and not self.credentials.anonymous:
                return Denied(base, status=status, code=code or "insufficient_scope")
            return Unauthorized(base, status=status, code=code)
        if status == 403:
            return Denied(base, status=status, code=code)
        if status == 404:
            return NotFound(base, status=status, code=code)
        if status >= 500 or status in (408, 429):
            # Busy or failing: worth another try, after the wait the registry asks for.
            return ServerError(base, status=status, code=code, retry_after=retry_after(response))
        return ProtocolError(base, status=status, code=code)

    def absolute(self, location: str) -> str:
        """Upload locations may be relative to the API's base URL."""
        try:
            return str(httpx.URL(self.base_url).join(location))
        except (httpx.InvalidURL, ValueError) as exc:
            raise ProtocolError(
                f"{self.host} sent an invalid upload location: {redact(str(exc))}"
            ) from None


def parse_error_body(response: httpx.Response) -> list[RegistryErrorDetail]:
    """The OCI ``{"errors": [{"code", "message"}]}`` body, tolerating anything else."""
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for item in errors[:5]:
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            message = item.get("message")
            # Bounded: a registry's message is quoted in ours, on one line of a terminal.
            out.append(
                RegistryErrorDetail(
                    item["code"][:100], message[:300] if isinstance(message, str) else ""
                )
            )
    return out


def _user_credentials(host: str) -> Credentials:
    """What the user has for another host that asks for credentials (a storage service that
    an upload or a redirect goes to): its own entry in the Docker config, or nothing."""
    from skiff.auth import dockerconfig
    from skiff.errors import SkiffError

    try:
        return dockerconfig.resolve(host)
    except SkiffError:
        return ANONYMOUS


def _speaks_plain_http(exc: httpx.ConnectError) -> bool:
    """True when an HTTPS attempt failed because the server answered in plain HTTP."""
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return False
        if isinstance(cause, ssl.SSLError):
            return True
    text = str(exc).lower()
    return "wrong version number" in text or "record layer failure" in text


def _digest_header(response: httpx.Response) -> Digest | None:
    value = response.headers.get("docker-content-digest")
    if not value:
        return None
    try:
        return Digest.parse(value)
    except InvalidInput:
        return None


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers.get(name, ""))
    except ValueError:
        return None
