"""Validated input values made ready for predict(): files fetched, File inputs opened."""

from __future__ import annotations

import io
from typing import Any

from .files import fetch
from .validation import FileRef


def resolve_input(value: Any, workdir: str) -> Any:
    if isinstance(value, FileRef):
        path = fetch(value.location, workdir)
        return open(path, "rb") if value.opened else path
    if isinstance(value, list):
        return [resolve_input(v, workdir) for v in value]
    return value


def is_open_file(value: Any) -> bool:
    return isinstance(value, io.IOBase) or (
        isinstance(value, list) and any(isinstance(v, io.IOBase) for v in value)
    )


def close_inputs(values: dict[str, Any]) -> None:
    """Close File inputs the runtime opened, before their temp files are removed."""
    for value in values.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, io.IOBase):
                item.close()
