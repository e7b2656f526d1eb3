"""Check and coerce request inputs against the predictor's InputSpecs.

Errors mimic the FastAPI/pydantic-v1 shape Cog answers with (HTTP 422), so
clients written against Cog keep working: ``{"loc": [...], "msg": ..., "type": ...}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .introspect import InputSpec, Primitive
from .types import Secret


@dataclass(frozen=True)
class FileRef:
    """A Path/File input not fetched yet: a URL, a data URI, or (local runner) a path."""

    location: str
    opened: bool = False  # File (not Path) inputs are handed over as open binary files


@dataclass(frozen=True)
class InputError:
    loc: tuple[str | int, ...]
    msg: str
    type: str

    def to_json(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class InvalidValue(Exception):
    def __init__(self, msg: str, kind: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.kind = kind


_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}
_URL_SCHEMES = ("http://", "https://", "data:")


def _coerce(prim: Primitive, value: Any, allow_local_paths: bool) -> Any:
    if prim is Primitive.STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise InvalidValue("str type expected", "type_error.str")
    if prim is Primitive.INTEGER:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InvalidValue("value is not a valid integer", "type_error.integer")
    if prim is Primitive.FLOAT:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(result):
                    return result
        raise InvalidValue("value is not a valid float", "type_error.float")
    if prim is Primitive.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise InvalidValue("value could not be parsed to a boolean", "type_error.bool")
    if prim in (Primitive.PATH, Primitive.FILE):
        if not isinstance(value, str) or not value:
            raise InvalidValue("value is not a valid URL", "value_error.url")
        if value.startswith(_URL_SCHEMES) or allow_local_paths:
            return FileRef(value, opened=prim is Primitive.FILE)
        raise InvalidValue(
            "value is not a valid URL: expected http(s):// or data: URI", "value_error.url.scheme"
        )
    if prim is Primitive.SECRET:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise InvalidValue("str type expected", "type_error.str")
    return value  # Primitive.ANY: any JSON value


def _check(spec: InputSpec, value: Any) -> None:
    if spec.ge is not None and value < spec.ge:
        raise InvalidValue(
            f"ensure this value is greater than or equal to {_num(spec.ge)}",
            "value_error.number.not_ge",
        )
    if spec.le is not None and value > spec.le:
        raise InvalidValue(
            f"ensure this value is less than or equal to {_num(spec.le)}",
            "value_error.number.not_le",
        )
    if spec.min_length is not None and len(value) < spec.min_length:
        raise InvalidValue(
            f"ensure this value has at least {spec.min_length} characters",
            "value_error.any_str.min_length",
        )
    if spec.max_length is not None and len(value) > spec.max_length:
        raise InvalidValue(
            f"ensure this value has at most {spec.max_length} characters",
            "value_error.any_str.max_length",
        )
    if spec.regex is not None and not re.match(spec.regex, value):
        raise InvalidValue(f'string does not match regex "{spec.regex}"', "value_error.str.regex")
    if spec.choices is not None and value not in spec.choices:
        permitted = ", ".join(repr(c) for c in spec.choices)
        raise InvalidValue(
            f"value is not a valid enumeration member; permitted: {permitted}", "type_error.enum"
        )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _default(spec: InputSpec) -> Any:
    value = spec.default_value()
    if spec.enum_type is not None and value is not None:
        return spec.enum_type(value)
    return value


def validate_inputs(
    specs: dict[str, InputSpec],
    raw: Any,
    *,
    allow_local_paths: bool = False,
    loc_prefix: tuple[str, ...] = ("body", "input"),
) -> tuple[dict[str, Any], list[InputError]]:
    """Coerce ``raw`` to predict() keyword arguments; unknown keys are ignored, as Cog does."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return {}, [InputError(loc_prefix, "value is not a valid dict", "type_error.dict")]
    values: dict[str, Any] = {}
    errors: list[InputError] = []
    for name, spec in specs.items():
        loc = (*loc_prefix, name)
        if name not in raw:
            if spec.required:
                errors.append(InputError(loc, "field required", "value_error.missing"))
            else:
                values[name] = _default(spec)
            continue
        value = raw[name]
        if value is None:
            # Optional inputs take null; others given null fall back to their default.
            if spec.type.repetition.is_optional:
                values[name] = None
                continue
            if not spec.required:
                values[name] = _default(spec)
                continue
            errors.append(
                InputError(loc, "none is not an allowed value", "type_error.none.not_allowed")
            )
            continue
        prim = spec.type.primitive
        try:
            if spec.type.repetition.is_list:
                if not isinstance(value, list):
                    raise InvalidValue("value is not a valid list", "type_error.list")
                items = []
                for i, item in enumerate(value):
                    try:
                        coerced = _coerce(prim, item, allow_local_paths)
                        _check(spec, coerced)
                    except InvalidValue as e:
                        errors.append(InputError((*loc, i), e.msg, e.kind))
                        continue
                    items.append(coerced)
                values[name] = items
            else:
                coerced = _coerce(prim, value, allow_local_paths)
                _check(spec, coerced)
                values[name] = spec.enum_type(coerced) if spec.enum_type else coerced
        except InvalidValue as e:
            errors.append(InputError(loc, e.msg, e.kind))
    return values, errors
