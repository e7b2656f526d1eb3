"""Read a predict() signature into typed specs: the single source for schema and validation."""

from __future__ import annotations

import collections.abc
import copy
import enum
import inspect
import os
import pathlib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .model import BaseModel
from .predictor import STREAMING_FLAG
from .types import MISSING, AsyncConcatenateIterator, ConcatenateIterator, FieldInfo, File, Secret


class IntrospectionError(Exception):
    """The predictor's signature uses something Cog cannot describe."""


class Primitive(enum.Enum):
    BOOL = "boolean"
    INTEGER = "integer"
    FLOAT = "number"
    STRING = "string"
    PATH = "path"
    FILE = "file"
    SECRET = "secret"
    ANY = "any"

    def json_type(self) -> dict[str, Any]:
        """The JSON Schema of one value, as Cog publishes it."""
        if self in (Primitive.PATH, Primitive.FILE):
            return {"type": "string", "format": "uri"}
        if self is Primitive.SECRET:
            return {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
        if self is Primitive.ANY:
            return {"type": "object"}
        return {"type": self.value}


class Repetition(enum.Enum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    REPEATED = "repeated"
    OPTIONAL_REPEATED = "optional_repeated"

    @property
    def is_list(self) -> bool:
        return self in (Repetition.REPEATED, Repetition.OPTIONAL_REPEATED)

    @property
    def is_optional(self) -> bool:
        return self in (Repetition.OPTIONAL, Repetition.OPTIONAL_REPEATED)


@dataclass(frozen=True)
class FieldType:
    primitive: Primitive
    repetition: Repetition

    def json_type(self) -> dict[str, Any]:
        if self.repetition.is_list:
            return {"type": "array", "items": self.primitive.json_type()}
        return self.primitive.json_type()


@dataclass(frozen=True)
class InputSpec:
    """One predict() parameter: its type and Input(...) constraints."""

    name: str
    order: int
    type: FieldType
    default: Any = MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Any] | None = None
    deprecated: bool | None = None
    enum_type: Any = None  # an Enum annotation: predict() gets members, not raw values

    @property
    def required(self) -> bool:
        return self.default is MISSING and not self.type.repetition.is_optional

    def default_value(self) -> Any:
        """A fresh copy of the default (lists must not be shared between predictions)."""
        return None if self.default is MISSING else copy.deepcopy(self.default)


class OutputKind(enum.Enum):
    SINGLE = "single"
    LIST = "list"
    ITERATOR = "iterator"
    CONCAT_ITERATOR = "concat_iterator"
    OBJECT = "object"
    ANY = "any"


@dataclass(frozen=True)
class OutputSpec:
    kind: OutputKind
    type: FieldType | None = None
    fields: dict[str, FieldType] = field(default_factory=dict)

    @property
    def streams(self) -> bool:
        return self.kind in (OutputKind.ITERATOR, OutputKind.CONCAT_ITERATOR)


@dataclass(frozen=True)
class PredictorInfo:
    """Everything the schema, the validator and the server need to know about a predictor."""

    method: str
    inputs: dict[str, InputSpec]
    output: OutputSpec
    accepts_weights: bool = False
    streaming: bool = False  # opted in to server-sent events with @cog.streaming


_PRIMITIVES: dict[Any, Primitive] = {
    bool: Primitive.BOOL,
    int: Primitive.INTEGER,
    float: Primitive.FLOAT,
    str: Primitive.STRING,
    Secret: Primitive.SECRET,
    File: Primitive.FILE,
    Any: Primitive.ANY,
    dict: Primitive.ANY,
}


def _primitive(tpe: Any) -> Primitive:
    if tpe in _PRIMITIVES:
        return _PRIMITIVES[tpe]
    if typing.get_origin(tpe) is dict or _is_typeddict(tpe):
        return Primitive.ANY
    if isinstance(tpe, type):
        if issubclass(tpe, enum.Enum):
            for base, prim in ((str, Primitive.STRING), (int, Primitive.INTEGER)):
                if issubclass(tpe, base):
                    return prim
        if issubclass(tpe, (pathlib.PurePath, os.PathLike)):
            return Primitive.PATH
        if issubclass(tpe, File):
            return Primitive.FILE
    raise IntrospectionError(f"unsupported type {_type_name(tpe)}")


def _is_typeddict(tpe: Any) -> bool:
    return isinstance(tpe, type) and issubclass(tpe, dict) and hasattr(tpe, "__total__")


# `X | Y` (types.UnionType) exists from Python 3.10; the image's Python may be older.
_UNION_ORIGINS = (typing.Union, getattr(types, "UnionType", typing.Union))


def _is_union(tpe: Any) -> bool:
    return typing.get_origin(tpe) in _UNION_ORIGINS


def _is_list(tpe: Any) -> bool:
    return tpe is list or typing.get_origin(tpe) is list


def _list_element(tpe: Any) -> Any:
    args = typing.get_args(tpe)
    if not args:
        return Any
    (elem,) = args
    if _is_list(elem) or _is_union(elem):
        raise IntrospectionError(f"nested type {_type_name(elem)} is not supported in a list")
    return elem


def field_type(tpe: Any) -> FieldType:
    """Map an annotation to Cog's (primitive, repetition) pair."""
    if _is_union(tpe):
        args = typing.get_args(tpe)
        if len(args) != 2 or type(None) not in args:
            raise IntrospectionError(f"unsupported union {_type_name(tpe)}: only Optional[X]")
        inner = args[0] if args[1] is type(None) else args[1]
        if _is_list(inner):
            return FieldType(_primitive(_list_element(inner)), Repetition.OPTIONAL_REPEATED)
        return FieldType(_primitive(inner), Repetition.OPTIONAL)
    if _is_list(tpe):
        return FieldType(_primitive(_list_element(tpe)), Repetition.REPEATED)
    return FieldType(_primitive(tpe), Repetition.REQUIRED)


def _type_name(tpe: Any) -> str:
    return str(getattr(tpe, "__name__", tpe))


def input_spec(order: int, name: str, tpe: Any, raw_default: Any) -> InputSpec:
    try:
        ft = field_type(tpe)
    except IntrospectionError as e:
        raise IntrospectionError(f"input {name}: {e}") from None
    info = raw_default if isinstance(raw_default, FieldInfo) else FieldInfo(default=raw_default)
    default = info.default
    if isinstance(default, enum.Enum):
        default = default.value
    if ft.primitive is Primitive.FLOAT:
        default = _as_float(default)
    choices = info.choices
    enum_type = tpe if isinstance(tpe, type) and issubclass(tpe, enum.Enum) else None
    if choices is not None:
        choices = [c.value if isinstance(c, enum.Enum) else c for c in choices]
    elif enum_type is not None:
        choices = [m.value for m in enum_type]
    spec = InputSpec(
        name=name,
        order=order,
        type=ft,
        default=default,
        description=info.description,
        ge=info.ge,
        le=info.le,
        min_length=info.min_length,
        max_length=info.max_length,
        regex=info.regex,
        choices=choices,
        deprecated=info.deprecated,
        enum_type=enum_type,
    )
    _check_constraints(spec)
    return spec


def _as_float(value: Any) -> Any:
    """Cog publishes float defaults as floats even when written as ``default=1``."""
    if isinstance(value, list):
        return [_as_float(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_constraints(spec: InputSpec) -> None:
    """Reject constraints that cannot apply, as Cog does when it loads the predictor."""
    prim = spec.type.primitive
    where = f"input {spec.name}"
    if (spec.ge is not None or spec.le is not None) and prim not in (
        Primitive.INTEGER,
        Primitive.FLOAT,
    ):
        raise IntrospectionError(f"{where}: ge/le apply only to int and float")
    if (
        spec.min_length is not None or spec.max_length is not None or spec.regex is not None
    ) and prim is not Primitive.STRING:
        raise IntrospectionError(f"{where}: min_length/max_length/regex apply only to str")
    if spec.regex is not None:
        try:
            re.compile(spec.regex)
        except re.error as e:
            raise IntrospectionError(f"{where}: invalid regex: {e}") from None
    if spec.choices is not None:
        if prim not in (Primitive.STRING, Primitive.INTEGER):
            raise IntrospectionError(f"{where}: choices apply only to str and int")
        if len(spec.choices) < 2:
            raise IntrospectionError(f"{where}: choices must have at least 2 elements")
        if spec.ge is not None or spec.le is not None:
            raise IntrospectionError(f"{where}: choices and ge/le are mutually exclusive")
        want = str if prim is Primitive.STRING else int
        if not all(isinstance(c, want) and not isinstance(c, bool) for c in spec.choices):
            raise IntrospectionError(f"{where}: every choice must be a {want.__name__}")


_ITERATORS = {
    collections.abc.Iterator,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
}
_CONCAT = {ConcatenateIterator, AsyncConcatenateIterator}


def output_spec(tpe: Any) -> OutputSpec:
    """Map a return annotation to the kind of output Cog produces."""
    if tpe is Any or tpe is inspect.Signature.empty:
        return OutputSpec(OutputKind.ANY)
    if isinstance(tpe, type) and issubclass(tpe, BaseModel):
        fields = {name: field_type(t) for name, t in tpe.field_types().items()}
        return OutputSpec(OutputKind.OBJECT, fields=fields)
    origin = typing.get_origin(tpe)
    if origin in _ITERATORS or origin in _CONCAT or tpe in _CONCAT:
        args = typing.get_args(tpe)
        elem = args[0] if args else Any
        kind = (
            OutputKind.CONCAT_ITERATOR
            if (origin in _CONCAT or tpe in _CONCAT)
            else (OutputKind.ITERATOR)
        )
        ft = field_type(elem)
        if ft.repetition is not Repetition.REQUIRED:
            raise IntrospectionError("iterator element type must not be Optional or a list")
        if kind is OutputKind.CONCAT_ITERATOR and ft.primitive is not Primitive.STRING:
            raise IntrospectionError("ConcatenateIterator must yield str")
        return OutputSpec(kind, type=ft)
    ft = field_type(tpe)
    if ft.repetition.is_list:
        return OutputSpec(OutputKind.LIST, type=FieldType(ft.primitive, Repetition.REQUIRED))
    return OutputSpec(OutputKind.SINGLE, type=FieldType(ft.primitive, Repetition.REQUIRED))


def inspect_predictor(target: Any, method: str) -> PredictorInfo:
    """Build the PredictorInfo of a predictor class (its ``method``) or a predict function."""
    is_class = inspect.isclass(target)
    fn = getattr(target, method) if is_class else target
    fn = inspect.unwrap(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:
        raise IntrospectionError(f"cannot resolve the annotations of {method}(): {e}") from None
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if is_class:
        params = params[1:]
    inputs: dict[str, InputSpec] = {}
    for order, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise IntrospectionError(f"{method}() must not take *args or **kwargs")
        if p.name not in hints:
            raise IntrospectionError(f"missing type annotation for input: {p.name}")
        raw_default = MISSING if p.default is p.empty else p.default
        inputs[p.name] = input_spec(order, p.name, hints[p.name], raw_default)
    try:
        output = output_spec(hints.get("return", inspect.Signature.empty))
    except IntrospectionError as e:
        raise IntrospectionError(f"output: {e}") from None
    accepts_weights = False
    if is_class and hasattr(target, "setup"):
        accepts_weights = "weights" in inspect.signature(target.setup).parameters
    return PredictorInfo(
        method=method,
        inputs=inputs,
        output=output,
        accepts_weights=accepts_weights,
        streaming=bool(getattr(getattr(target, method, target), STREAMING_FLAG, False)),
    )
