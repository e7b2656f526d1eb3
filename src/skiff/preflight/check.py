"""The vocabulary of preflight: a check, its result, and the context checks share.

A check is anything with a ``name`` and a ``run(context)`` that returns a one-line success
message or raises ``CheckFailed(message, hint)``. Checks run in order and share what they learn
(the parsed reference, the credentials, the registry client) through the context.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from skiff.reference import Reference
from skiff.registry.trust import TransportOptions

if TYPE_CHECKING:
    # The client pulls in httpx: imported by the checks that talk to the registry, once the
    # host is known and its CA store is loading (see preflight.runner).
    from skiff.auth.credentials import Credentials
    from skiff.registry.client import Ping, RegistryClient


class Status(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class Severity(enum.Enum):
    """What a failure means: the user's input is wrong (exit 2) or the destination refuses (3)."""

    INPUT = "input"
    DESTINATION = "destination"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    hint: str | None = None
    elapsed_ms: float = 0.0
    severity: Severity = Severity.DESTINATION

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "message": self.message,
            "hint": self.hint,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


class CheckFailed(Exception):
    """Raised by a check: the destination (or the input) will not do, and here is why."""

    def __init__(
        self, message: str, hint: str | None = None, severity: Severity = Severity.DESTINATION
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.severity = severity


class CheckSkipped(Exception):
    """Raised by a check that does not apply here (e.g. a JWT claim check on an opaque token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Intent:
    """What the push means to do beyond its destination; checks that depend on it read it here."""

    platform: str = "linux/amd64"  # OS/ARCH of the image to be built
    new_repository: bool = False  # --new: a repository that does not exist yet is meant


@dataclass
class Context:
    """What checks know so far. Later checks read what earlier ones found."""

    text: str  # the reference as the user typed it
    options: TransportOptions
    model_dir: Path | None = None
    intent: Intent = field(default_factory=Intent)
    reference: Reference | None = None
    credentials: Credentials | None = None
    client: RegistryClient | None = None
    ping: Ping | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def require_reference(self) -> Reference:
        if self.reference is None:
            raise CheckSkipped("needs a valid reference")
        return self.reference

    def require_client(self) -> RegistryClient:
        if self.client is None:
            raise CheckSkipped("needs the registry")
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@runtime_checkable
class Check(Protocol):
    """One preflight check. ``run`` returns what it verified, in one line."""

    name: str

    def run(self, context: Context) -> str: ...


@runtime_checkable
class Platform(Protocol):
    """A registry platform's knowledge: which references it owns, extra checks, better hints."""

    name: str

    def matches(self, reference: Reference) -> bool: ...

    def checks(self) -> list[Check]: ...

    # Optional: ``local_checks()``, checks that need only the reference (no network); they run
    # right after it is parsed, before the registry is asked anything.

    def refine(self, context: Context, result: CheckResult) -> CheckResult: ...
