"""One typed hierarchy for every failure a user can meet.

Each error carries a one-line ``message`` (what went wrong) and an optional ``hint`` (what to do
next). The CLI maps the class to an exit code; nothing below the CLI prints or exits.
"""

from __future__ import annotations


class SkiffError(Exception):
    """Base of every error skiff reports to its user (exit 1 unless a subclass says otherwise)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInput(SkiffError):
    """The user's input is wrong: a bad reference, an invalid cog.yaml, a bad flag (exit 2)."""


class DestinationRejected(SkiffError):
    """Preflight proved the destination will not take the push (exit 3)."""


class BuildFailed(SkiffError):
    """The image could not be built (exit 4)."""


class UploadFailed(SkiffError):
    """The upload failed after preflight had passed (exit 5)."""
