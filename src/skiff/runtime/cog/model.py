"""BaseModel: structured predict() outputs, declared as annotated class attributes.

Cog uses pydantic here; the runtime must run on a bare Python, so this is a small
keyword-only constructor over the class annotations (including inherited ones).
"""

from __future__ import annotations

import builtins
import typing
from typing import Any, ClassVar

from .types import MISSING


class BaseModel:
    """Subclass with annotated fields; construct with keyword arguments."""

    # builtins.dict: inside this class body, plain `dict` is the method below.
    __cog_fields__: ClassVar[builtins.dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__annotations__", {}):  # noqa: RUF063 - Python 3.9
                if not name.startswith("_") and name != "__cog_fields__":
                    fields[name] = getattr(cls, name, MISSING)
        cls.__cog_fields__ = fields

    def __init__(self, **values: Any) -> None:
        fields = type(self).__cog_fields__
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s): {', '.join(unknown)}")
        for name, default in fields.items():
            if name in values:
                setattr(self, name, values[name])
            elif default is not MISSING:
                setattr(self, name, default)
            elif _is_optional(type(self), name):
                setattr(self, name, None)
            else:
                raise TypeError(f"{type(self).__name__} missing field: {name}")

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Resolved annotations of the fields, in declaration order."""
        hints = typing.get_type_hints(cls)
        return {name: hints[name] for name in cls.__cog_fields__}

    def dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).__cog_fields__}

    model_dump = dict

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.dict().items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BaseModel)
            and type(other) is type(self)
            and (self.dict() == other.dict())
        )

    __hash__ = None  # type: ignore[assignment]


def _is_optional(cls: type, name: str) -> bool:
    try:
        hint = typing.get_type_hints(cls)[name]
    except Exception:
        return False
    return type(None) in typing.get_args(hint)
