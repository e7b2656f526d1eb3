"""Predict() results made JSON-ready: iterators drained, files turned into URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .files import is_file_output
from .model import BaseModel
from .types import Secret


def iterate_output(result: Any) -> Iterator[Any]:
    """Items of a (sync or async) iterator output; a single value is one item."""
    if isinstance(result, AsyncIterator):
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(result.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()
    elif isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict)):
        yield from result
    else:
        yield result


def encode_output(value: Any, encode_file: Callable[[Any], str]) -> Any:
    """Make an output JSON-ready: files become URLs, models become objects."""
    if is_file_output(value):
        return encode_file(value)
    if isinstance(value, BaseModel):
        return {k: encode_output(v, encode_file) for k, v in value.dict().items()}
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {str(k): encode_output(v, encode_file) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [encode_output(v, encode_file) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {
            k: encode_output(getattr(value, k), encode_file) for k in value.__dataclass_fields__
        }
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # Enum
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return encode_output(value.tolist(), encode_file)
    raise TypeError(f"output of type {type(value).__name__} cannot be encoded as JSON")
