"""The credentials value and the errors a user can meet while looking them up.

A ``Credentials`` value travels from the config file or a helper to the registry client; it is
printed in logs and error messages, so its text forms mask every secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skiff.errors import InvalidInput, SkiffError

_MASK = "***"


@dataclass(frozen=True, repr=False)
class Credentials:
    """What to present to a registry, and where it came from (for messages; never a secret)."""

    username: str | None = None
    # Password or access token, sent with Basic auth (to the registry or its token endpoint).
    password: str | None = None
    # OAuth2 refresh token (docker config "identitytoken"), exchanged at the token endpoint.
    identity_token: str | None = None
    # A bearer token to send as is (docker config "registrytoken").
    registry_token: str | None = None
    source: str = ""

    @property
    def anonymous(self) -> bool:
        """True when there is nothing to authenticate with (a bare username is not a credential)."""
        return not (self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        def mask(value: str | None) -> str:
            return "None" if value is None else repr(_MASK)

        return (
            f"Credentials(username={self.username!r}, password={mask(self.password)}, "
            f"identity_token={mask(self.identity_token)}, "
            f"registry_token={mask(self.registry_token)}, source={self.source!r})"
        )

    def __str__(self) -> str:
        if self.anonymous:
            return "anonymous"
        if self.registry_token:
            kind = "registry token"
        elif self.identity_token:
            kind = "identity token"
        else:
            kind = f"user {self.username!r}" if self.username else "password"
        return f"{kind} from {self.source}" if self.source else kind


ANONYMOUS = Credentials()


class CredentialConfigError(InvalidInput):
    """The Docker config file cannot be used as it is: unreadable, not JSON, or wrong shapes."""

    def __init__(self, path: Path, problem: str, hint: str | None = None) -> None:
        super().__init__(
            f"{path}: {problem}",
            hint or f"fix or remove that entry in {path} (`skiff login HOST` writes a valid one)",
        )
        self.path = path
        self.problem = problem


class CredentialHelperError(SkiffError):
    """A docker-credential-* helper could not be run, or failed, or answered nonsense."""

    def __init__(self, helper: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.helper = helper  # the full program name, e.g. "docker-credential-ecr-login"


class CredentialHelperNotFound(CredentialHelperError):
    """The configured helper program is not on PATH."""
