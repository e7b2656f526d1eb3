"""Cog's input/output value types: Input, Path, File, Secret, ConcatenateIterator."""

from __future__ import annotations

import io
import pathlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Missing:
    """Sentinel type: an Input() given no default is required."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldInfo:
    """What ``Input(...)`` returns: the metadata of one predict() parameter."""

    default: Any = MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Any] | None = None
    deprecated: bool | None = None


def Input(
    default: Any = MISSING,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    regex: str | None = None,
    choices: list[Any] | None = None,
    deprecated: bool | None = None,
) -> Any:
    """Describe a predict() parameter; typed ``Any`` so ``x: int = Input(...)`` type-checks."""
    return FieldInfo(
        # pydantic's Field(...) spelling of "required", found in older predictors.
        default=MISSING if default is Ellipsis else default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        regex=regex,
        choices=list(choices) if choices is not None else None,
        deprecated=deprecated,
    )


class Path(pathlib.PosixPath):
    """A file path; inputs arrive as URLs (downloaded first), outputs leave as URLs."""

    # pathlib.PosixPath before 3.12 needs _flavour on subclasses; inherited here.


class File(io.IOBase):
    """Deprecated in Cog in favour of Path: a readable binary file object."""


class Secret:
    """A string that is never shown in logs, reprs or errors."""

    __slots__ = ("_secret_value",)

    def __init__(self, secret_value: str | None = None) -> None:
        self._secret_value = secret_value

    def get_secret_value(self) -> str | None:
        return self._secret_value

    def __repr__(self) -> str:
        return f"Secret({self!s})"

    def __str__(self) -> str:
        return "**********" if self._secret_value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._secret_value == self._secret_value

    def __hash__(self) -> int:
        return hash(self._secret_value)


class ConcatenateIterator(Iterator[T], Generic[T]):
    """Marks streamed text output whose pieces a client should join (LLM tokens)."""

    def __next__(self) -> T:  # pragma: no cover - a type marker, never instantiated
        raise StopIteration


class AsyncConcatenateIterator(AsyncIterator[T], Generic[T]):
    """The async form of ConcatenateIterator."""

    async def __anext__(self) -> T:  # pragma: no cover - a type marker
        raise StopAsyncIteration
