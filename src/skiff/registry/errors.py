"""Typed failures of a conversation with a registry.

Each says which host was involved and what the registry said; the layers above decide what the
failure means for the user (a preflight rejection, an upload failure) and add the fix.
"""

from __future__ import annotations

from skiff.errors import SkiffError


class RegistryError(SkiffError):
    """Something went wrong talking to a registry."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code  # the OCI error code, e.g. "DENIED", "NAME_UNKNOWN"
        self.retry_after = retry_after  # seconds the registry asked us to wait, if it did


class Unreachable(RegistryError):
    """No HTTP conversation was possible: DNS, refused connection, timeout."""


class TLSFailure(Unreachable):
    """The TLS handshake failed: unknown CA, wrong host name, expired certificate."""


class InsecureTransport(RegistryError):
    """Refused to send credentials over plain HTTP to a host that is not on this machine."""


class ProtocolError(RegistryError):
    """The registry answered something that is not the distribution protocol (garbage)."""


class ServerError(RegistryError):
    """The registry failed (5xx) even after retries."""


class Unauthorized(RegistryError):
    """401: no credentials, or the credentials were not accepted."""


class Denied(RegistryError):
    """403, or a 401 insufficient_scope: authenticated but not allowed."""


class NotFound(RegistryError):
    """404: repository, manifest, blob or upload unknown."""


class TokenRejected(Unauthorized):
    """The token service refused the credentials."""


class OversizedAnswer(ProtocolError):
    """The registry sent more than its descriptor says, or than skiff reads into memory: refused
    unread (another attempt would only be sent the same)."""


class DigestMismatch(ProtocolError):
    """The registry's word about a digest disagrees with the bytes skiff sent or received."""
