"""The one error a schema can fail with: the predictor cannot be read without running it."""

from __future__ import annotations

from skiff.errors import InvalidInput


class UnsupportedPredictor(InvalidInput):
    """Cog's static reader would refuse this predictor, so the build must stop (exit 2).

    The message names the file and line and says what Cog cannot read there, because the fix is
    always in the user's source (a literal instead of an expression, a supported type).
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(
            f"{where}{message}",
            hint="Cog builds the model's schema without running it; see "
            "https://cog.run/python for the input and output types it can read.",
        )
        self.path = path
        self.line = line


class Unsupported(Exception):
    """Raised deep in type resolution, where the file and line are not known yet.

    The parser catches it at the node being read and re-raises it as UnsupportedPredictor.
    """
