"""The predictor's schema read from its source, without importing it.

Importing a predictor needs its dependencies (torch, ...), which a daemonless build
may not have on the host. Cog itself moved to static schema generation for the
same reason. Only annotations and ``Input(...)`` arguments are read: names Cog
knows, literals, and module-level constants. Anything else raises StaticSchemaError,
and the caller falls back to importing the predictor.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import enum
import os
import pathlib
import typing
from typing import Any

from .introspect import PredictorInfo, input_spec, output_spec
from .model import BaseModel
from .predictor import PredictorRef
from .schema import build_schema
from .types import (
    MISSING,
    AsyncConcatenateIterator,
    ConcatenateIterator,
    File,
    Input,
    Path,
    Secret,
)


class StaticSchemaError(Exception):
    """The source uses something only an import could resolve."""


# Names an annotation may use, bare or qualified (typing.X, cog.X, t.X all resolve by
# their last component).
_KNOWN: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "dict": dict,
    "list": list,
    "Any": Any,
    "Dict": typing.Dict,  # noqa: UP006 - resolving user annotations, not writing them
    "List": typing.List,  # noqa: UP006
    "Optional": typing.Optional,
    "Union": typing.Union,
    "Iterator": collections.abc.Iterator,
    "Generator": collections.abc.Generator,
    "AsyncIterator": collections.abc.AsyncIterator,
    "AsyncGenerator": collections.abc.AsyncGenerator,
    "Path": Path,
    "PathLike": os.PathLike,
    "File": File,
    "Secret": Secret,
    "ConcatenateIterator": ConcatenateIterator,
    "AsyncConcatenateIterator": AsyncConcatenateIterator,
}
_QUALIFIED_OK = {"typing", "cog", "pathlib", "collections", "abc", "os", "t", "types"}


class _Module:
    """What the static reader knows about the predictor's module."""

    def __init__(self, tree: ast.Module) -> None:
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.functions = {
            n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        self.constants: dict[str, Any] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name):
                with contextlib.suppress(StaticSchemaError):  # not a constant: ignore it
                    self.constants[target.id] = self.literal(value)
        self._resolved: dict[str, Any] = {}

    # -- values --------------------------------------------------------------------------------

    def literal(self, node: ast.expr) -> Any:
        """A literal, allowing module constants and ``Enum.MEMBER`` of enums in this file."""
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            klass = self.classes.get(node.value.id)
            if klass is not None and self._is_enum(klass):
                return self._enum(klass)[node.attr]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.literal(e) for e in node.elts]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.literal(node.operand)
            if isinstance(value, (int, float)):
                return -value
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError):
            raise StaticSchemaError(
                f"line {node.lineno}: {ast.unparse(node)!r} is not a literal"
            ) from None

    def default(self, node: ast.expr | None) -> Any:
        if node is None:
            return MISSING
        if isinstance(node, ast.Call) and _last_name(node.func) == "Input":
            args = [self.literal(a) for a in node.args]
            kwargs = {}
            for kw in node.keywords:
                if kw.arg is None:
                    raise StaticSchemaError(f"line {node.lineno}: Input(**kwargs) is not static")
                kwargs[kw.arg] = self.literal(kw.value)
            return Input(*args, **kwargs)
        return self.literal(node)

    # -- types ---------------------------------------------------------------------------------

    def annotation(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.annotation(ast.parse(node.value, mode="eval").body)  # "forward refs"
        if isinstance(node, ast.Constant) and node.value is None:
            return type(None)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return typing.Union[self.annotation(node.left), self.annotation(node.right)]  # noqa: UP007
        if isinstance(node, ast.Subscript):
            origin = self.annotation(node.value)
            inner = node.slice
            args = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            resolved = tuple(self.annotation(a) for a in args)
            try:
                return origin[resolved if len(resolved) > 1 else resolved[0]]
            except TypeError as e:
                raise StaticSchemaError(f"line {node.lineno}: {e}") from None
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id not in _QUALIFIED_OK:
                raise StaticSchemaError(f"line {node.lineno}: unknown type {ast.unparse(node)}")
            return self._name(node.attr, node)
        if isinstance(node, ast.Name):
            return self._name(node.id, node)
        raise StaticSchemaError(f"line {node.lineno}: unsupported annotation {ast.unparse(node)}")

    def _name(self, name: str, node: ast.expr) -> Any:
        if name in self._resolved:
            return self._resolved[name]
        klass = self.classes.get(name)
        if klass is not None:
            if self._is_enum(klass):
                return self._enum_type(klass)
            if self._is_model(klass):
                return self._model(klass)
            raise StaticSchemaError(f"line {node.lineno}: {name} is a class of this file")
        if name in _KNOWN:
            return _KNOWN[name]
        if name == "Path" or name == "PurePath":
            return pathlib.Path
        raise StaticSchemaError(f"line {node.lineno}: unknown type {name}")

    def _bases(self, klass: ast.ClassDef) -> set[str]:
        names = {_last_name(b) for b in klass.bases}
        for base in list(names):
            parent = self.classes.get(base)
            if parent is not None and parent is not klass:
                names |= self._bases(parent)
        return names

    def _is_enum(self, klass: ast.ClassDef) -> bool:
        return bool(self._bases(klass) & {"Enum", "StrEnum", "IntEnum"})

    def _is_model(self, klass: ast.ClassDef) -> bool:
        return "BaseModel" in self._bases(klass)

    def _enum(self, klass: ast.ClassDef) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for stmt in klass.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                members[stmt.targets[0].id] = self.literal(stmt.value)
        return members

    def _enum_type(self, klass: ast.ClassDef) -> Any:
        members = self._enum(klass)
        base: type = int if all(isinstance(v, int) for v in members.values()) else str
        made = enum.Enum(klass.name, members, type=base)  # type: ignore[misc]
        self._resolved[klass.name] = made
        return made

    def _model(self, klass: ast.ClassDef) -> Any:
        annotations: dict[str, Any] = {}
        for parent in reversed([klass, *self._model_parents(klass)]):
            for stmt in parent.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    annotations[stmt.target.id] = self.annotation(stmt.annotation)
        made = type(klass.name, (BaseModel,), {"__annotations__": annotations})
        self._resolved[klass.name] = made
        return made

    def _model_parents(self, klass: ast.ClassDef) -> list[ast.ClassDef]:
        parents = []
        for base in klass.bases:
            parent = self.classes.get(_last_name(base))
            if parent is not None:
                parents += [parent, *self._model_parents(parent)]
        return parents

    # -- the predictor -------------------------------------------------------------------------

    def predict_function(
        self, name: str, training: bool = False
    ) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, str, bool]:
        """The predict function, the method name that serves, and whether it is a method."""
        if name in self.functions:
            return self.functions[name], name, False
        klass = self.classes.get(name)
        if klass is None:
            raise StaticSchemaError(f"{name} is not defined at the top level of the file")
        chain = [klass, *self._model_parents(klass)]
        methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for k in reversed(chain):
            for stmt in k.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods[stmt.name] = stmt
        is_runner = "BaseRunner" in self._bases(klass)
        order = ("run", "predict") if is_runner else ("predict", "run")
        for method in ("train",) if training else order:
            if method in methods:
                return methods[method], method, True
        wanted = "train" if training else "predict"
        raise StaticSchemaError(f"{name} defines no {wanted}() method in this file")


def _last_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _last_name(node.value)
    return ""


def static_predictor_info(source: str, name: str, training: bool = False) -> PredictorInfo:
    """PredictorInfo from a predictor's source text, as introspection would give."""
    from .introspect import IntrospectionError

    try:
        module = _Module(ast.parse(source))
    except SyntaxError as e:
        raise StaticSchemaError(f"syntax error at line {e.lineno}: {e.msg}") from None
    fn, method, is_method = module.predict_function(name, training)
    args = fn.args
    if args.vararg or args.kwarg:
        raise StaticSchemaError(f"{method}() must not take *args or **kwargs")
    positional = [*args.posonlyargs, *args.args]
    if is_method:
        positional = positional[1:]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    # Index pairs, not zip(strict=...): the image's Python may predate 3.10.
    params = [(positional[i], defaults[i]) for i in range(len(positional))]
    params += [(args.kwonlyargs[i], args.kw_defaults[i]) for i in range(len(args.kwonlyargs))]
    inputs = {}
    try:
        for order, (arg, default) in enumerate(params):
            if arg.annotation is None:
                raise StaticSchemaError(f"missing type annotation for input: {arg.arg}")
            tpe = module.annotation(arg.annotation)
            inputs[arg.arg] = input_spec(order, arg.arg, tpe, module.default(default))
        returns = module.annotation(fn.returns) if fn.returns is not None else Any
        output = output_spec(returns)
    except IntrospectionError as e:
        raise StaticSchemaError(str(e)) from None
    weights = False
    if is_method and name in module.classes:
        for stmt in module.classes[name].body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "setup":
                weights = any(a.arg == "weights" for a in [*stmt.args.args, *stmt.args.kwonlyargs])
    decorators = [d.func if isinstance(d, ast.Call) else d for d in fn.decorator_list]
    return PredictorInfo(
        method=method,
        inputs=inputs,
        output=output,
        accepts_weights=weights,
        streaming=any(_last_name(d) == "streaming" for d in decorators),
    )


def static_openapi_schema(
    predictor_ref: str, cwd: str | os.PathLike[str] = ".", trainer_ref: str | None = None
) -> dict[str, Any]:
    """The OpenAPI document of a predictor (and trainer), read from source without importing."""
    info = _static_info(predictor_ref, cwd, training=False)
    training = _static_info(trainer_ref, cwd, training=True) if trainer_ref else None
    return build_schema(info, training)


def _static_info(ref_text: str, cwd: str | os.PathLike[str], training: bool) -> PredictorInfo:
    ref = PredictorRef.parse(ref_text)
    path = os.path.join(os.fspath(cwd), ref.path)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        raise StaticSchemaError(f"cannot read {ref.path}: {e.strerror}") from None
    return static_predictor_info(source, ref.name, training)
