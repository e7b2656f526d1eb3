"""Read a predictor's signature from its source, following Cog's static reader rule by rule.

The result (``Predictor``) holds what the OpenAPI document is built from: the inputs in order with
their ``Input(...)`` settings, the output type, whether ``@cog.streaming`` is on, and the
``@cog.concurrent(max=N)`` value.
"""

from __future__ import annotations

import ast
import contextlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from skiff.cogschema import annot
from skiff.cogschema.errors import Unsupported, UnsupportedPredictor
from skiff.cogschema.imports import Imports
from skiff.cogschema.literals import (
    NONE,
    Lit,
    Source,
    Val,
    element,
    go_parse_float,
    keyword_value,
    parse_bool,
    parse_default,
    parse_list,
    raw_string,
    value_of,
)
from skiff.cogschema.models import ModelContext, is_known_external, module_to_file, nested_module
from skiff.cogschema.types import (
    FieldType,
    InputType,
    ModelMap,
    OutputResolver,
    SchemaType,
    field_type_of,
    resolve_input,
)

Scope = dict[str, Lit]
FuncDef = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class InputInfo:
    """What an ``Input(...)`` call says."""

    default: Lit | None = None
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Lit] | None = None
    deprecated: bool | None = None
    accept: str | None = None


@dataclass
class InputField:
    name: str
    order: int
    ftype: FieldType
    itype: InputType
    info: InputInfo = field(default_factory=InputInfo)


@dataclass
class Predictor:
    inputs: list[InputField]
    output: SchemaType
    train: bool
    streaming: bool
    concurrency_max: int | None
    is_async: bool


@dataclass
class Registry:
    """Input() definitions kept on classes: ``Inputs.prompt`` and ``Inputs.seed(...)`` forms."""

    attributes: dict[str, InputInfo] = field(default_factory=dict)
    methods: dict[str, tuple[list[str], InputInfo]] = field(default_factory=dict)


@dataclass
class FileContext:
    folder: Path
    src: Source
    imports: Imports
    scope: Scope
    registry: Registry
    models: ModelMap
    typed_dicts: set[str]
    train: bool
    cache: dict[str, FileContext]
    loading: set[str]


# --- module scope and Input() calls --------------------------------------------------------------


def collect_scope(src: Source) -> Scope:
    """Module-level NAME = literal assignments (Cog resolves defaults and choices through them)."""
    scope: Scope = {}
    for stmt in src.tree.body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            target, value = stmt.targets[0], stmt.value
            before = src.between(target, value)
        elif (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
        ):
            target, value = stmt.target, stmt.value
            before = src.between(stmt.annotation, value)
        else:
            continue
        lit = parse_default(src, value_of(src, value, before))
        if lit is not None:
            scope[target.id] = lit
    return scope


def is_input_call(src: Source, v: Val, imports: Imports) -> bool:
    if v.wrapped or not isinstance(v.node, ast.Call):
        return False
    name = src.seg(v.node.func)
    return name == "Input" or imports.is_cog(name, "Input")


def _resolve_default(src: Source, v: Val, scope: Scope) -> Lit | None:
    lit = parse_default(src, v)
    if lit is not None:
        return lit
    if not v.wrapped and isinstance(v.node, ast.Name):
        return scope.get(v.node.id)
    return None


def _resolve_string(src: Source, v: Val, scope: Scope) -> str | None:
    s = raw_string(v.text)
    if s is not None:
        return s
    if not v.wrapped and isinstance(v.node, ast.Name):
        lit = scope.get(v.node.id)
        if lit is not None and lit.kind == "str":
            return str(lit.value)
    return None


def _resolve_choices(src: Source, v: Val, scope: Scope) -> list[Lit] | None:
    if v.wrapped:
        return None
    node = v.node
    if isinstance(node, ast.List):
        return parse_list(src, v)
    if isinstance(node, ast.Name):
        lit = scope.get(node.id)
        return list(lit.items) if lit is not None and lit.kind == "list" else None
    if isinstance(node, ast.Call):
        if src.seg(node.func) != "list" or not node.args:
            return None
        arg = node.args[0]
        if not isinstance(arg, ast.Call) or not isinstance(arg.func, ast.Attribute):
            return None
        obj = arg.func.value
        if not isinstance(obj, ast.Name):
            return None
        d = scope.get(obj.id)
        if d is None or d.kind != "dict":
            return None
        if arg.func.attr == "keys":
            return [k for k, _ in d.pairs]
        if arg.func.attr == "values":
            return [val for _, val in d.pairs]
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _resolve_choices(src, element(src, node.left), scope)
        if left is None:
            return None
        right = _resolve_choices(src, element(src, node.right), scope)
        if right is None:
            return None
        return left + right
    return None


def parse_input_call(src: Source, call: ast.Call, param: str, scope: Scope) -> InputInfo:
    info = InputInfo()
    for kw in call.keywords:
        if kw.arg is None:
            continue
        v = keyword_value(src, kw)
        key = kw.arg
        if key == "default":
            info.default = _resolve_default(src, v, scope) or NONE
        elif key == "default_factory":
            raise src.fail(
                kw,
                f"input '{param}': Input(default_factory=...) cannot be read statically; "
                "give a literal default instead",
            )
        elif key == "description":
            s = _resolve_string(src, v, scope)
            if s is not None:
                info.description = s
        elif key in ("ge", "le"):
            n = go_parse_float(v.text)
            if n is not None:
                setattr(info, key, n)
        elif key in ("min_length", "max_length"):
            n = go_parse_float(v.text)
            if n is not None:
                setattr(info, key, int(n))
        elif key == "regex":
            s = raw_string(v.text)
            if s is not None:
                info.regex = s
        elif key == "choices":
            items = _resolve_choices(src, v, scope)
            if items is None:
                raise src.fail(
                    kw,
                    f"input '{param}': choices `{v.text}` cannot be read statically; "
                    'use a literal list (choices=["a", "b"]) or a module-level list',
                )
            info.choices = items
        elif key == "deprecated":
            b = parse_bool(v)
            if b is not None:
                info.deprecated = b
        elif key == "accept":
            s = raw_string(v.text)
            if s is not None:
                info.accept = s
    return info


def _param_names(fn: FuncDef) -> list[str]:
    a = fn.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs] if p.arg not in ("self", "cls")]


def collect_registry(src: Source, imports: Imports, scope: Scope) -> Registry:
    reg = Registry()
    for stmt in src.tree.body:
        if not isinstance(stmt, ast.ClassDef):
            continue
        for item in stmt.body:
            if isinstance(item, (ast.Assign, ast.AnnAssign)):
                target = item.targets[0] if isinstance(item, ast.Assign) else item.target
                if isinstance(item, ast.Assign) and len(item.targets) != 1:
                    continue
                if not isinstance(target, ast.Name) or item.value is None:
                    continue
                v = element(src, item.value)
                if is_input_call(src, v, imports):
                    key = f"{stmt.name}.{target.id}"
                    # Cog drops an Input() attribute it cannot read.
                    with contextlib.suppress(UnsupportedPredictor):
                        call = item.value
                        assert isinstance(call, ast.Call)
                        reg.attributes[key] = parse_input_call(src, call, key, scope)
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for body_stmt in item.body:
                    if isinstance(body_stmt, ast.Return) and body_stmt.value is not None:
                        v = element(src, body_stmt.value)
                        if is_input_call(src, v, imports):
                            key = f"{stmt.name}.{item.name}"
                            try:
                                info = parse_input_call(src, body_stmt.value, key, scope)  # type: ignore[arg-type]
                            except UnsupportedPredictor:
                                break
                            reg.methods[key] = (_param_names(item), info)
                            break
    return reg


def _resolve_reference(src: Source, v: Val, reg: Registry) -> InputInfo | None:
    if v.wrapped:
        return None
    node = v.node
    if isinstance(node, ast.Attribute):
        return reg.attributes.get(src.seg(node))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        found = reg.methods.get(src.seg(node.func))
        if found is None:
            return None
        names, base = found
        info = InputInfo(**vars(base))
        values: dict[str, ast.expr] = {}
        for i, arg in enumerate(node.args):
            if i < len(names):
                values[names[i]] = arg
        for kw in node.keywords:
            if kw.arg is not None:
                values[kw.arg] = kw.value
        for name, expr in values.items():
            ev = element(src, expr)
            if name == "default":
                lit = parse_default(src, ev)
                if lit is not None:
                    info.default = lit
            elif name == "description":
                s = raw_string(ev.text)
                if s is not None:
                    info.description = s
            elif name in ("ge", "le"):
                n = go_parse_float(ev.text)
                if n is not None:
                    setattr(info, name, n)
        return info
    return None


# --- finding the callable ------------------------------------------------------------------------


def load_file(
    folder: Path, src: Source, train: bool, cache: dict[str, FileContext], loading: set[str]
) -> FileContext:
    imports = Imports.collect(src.tree)
    scope = collect_scope(src)
    mctx = ModelContext(folder, imports, src.rel, {})
    models = mctx.collect(src)
    mctx.resolved = models
    mctx.resolve_external(models)
    mctx.resolved = models
    models.update(mctx.collect(src))
    registry = collect_registry(src, imports, scope)
    return FileContext(
        folder, src, imports, scope, registry, models, mctx.typed_dicts, train, cache, loading
    )


def _load_module_file(file: FileContext, module: str) -> FileContext | None:
    if is_known_external(module):
        return None
    py = module_to_file(module, file.src.rel)
    if not py:
        return None
    key = posixpath.normpath(py)
    if key in file.cache:
        return file.cache[key]
    if key in file.loading or not (file.folder / key).is_file():
        return None
    file.loading.add(key)
    try:
        ctx = load_file(
            file.folder, Source.read(file.folder, key), file.train, file.cache, file.loading
        )
    finally:
        file.loading.discard(key)
    file.cache[key] = ctx
    return ctx


def _top_class(src: Source, name: str) -> ast.ClassDef | None:
    for stmt in src.tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return stmt
    return None


def _top_function(src: Source, name: str) -> FuncDef | None:
    for stmt in src.tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            return stmt
    return None


def _imported_parent(file: FileContext, parent: str) -> tuple[FileContext, ast.ClassDef] | None:
    head, dot, tail = parent.partition(".")
    entry = file.imports.get(head if dot else parent)
    if entry is None:
        return None
    class_name = tail if dot else entry.original
    pf = _load_module_file(file, entry.module)
    if pf is None:
        pf = _load_module_file(file, nested_module(entry.module, entry.original))
    if pf is None:
        return None
    node = _top_class(pf.src, class_name)
    return (pf, node) if node is not None else None


def _predict_methods(
    file: FileContext, cls: ast.ClassDef, seen: set[tuple[str, str]]
) -> tuple[tuple[FileContext, FuncDef] | None, tuple[FileContext, FuncDef] | None]:
    key = (file.src.rel, cls.name)
    if key in seen:
        return None, None
    seen.add(key)
    run = predict = None
    for item in cls.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if item.name == "run":
                run = (file, item)
            elif item.name == "predict":
                predict = (file, item)
    for base in cls.bases:
        if not isinstance(base, (ast.Name, ast.Attribute)):
            continue
        parent = file.src.seg(base)
        local = _top_class(file.src, parent)
        found = (file, local) if local is not None else _imported_parent(file, parent)
        if found is None:
            continue
        p_run, p_predict = _predict_methods(found[0], found[1], seen)
        run = run or p_run
        predict = predict or p_predict
    return run, predict


def find_target(file: FileContext, ref: str) -> tuple[FileContext, FuncDef]:
    method = "train" if file.train else "predict"
    cls = _top_class(file.src, ref)
    if cls is not None:
        if not file.train:
            run, predict = _predict_methods(file, cls, set())
            if run is not None:
                return run
            if predict is not None:
                return predict
            raise file.src.fail(cls, f"class {ref} must define run() or predict()")
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == method:
                return file, item
        raise file.src.fail(cls, f"class {ref} has no {method}() method")
    fn = _top_function(file.src, ref)
    if fn is None and ref != method:
        fn = _top_function(file.src, method)
    if fn is None:
        raise file.src.fail(None, f"no class or function named '{ref}' at the top level")
    return file, fn


# --- inputs, output, decorators -------------------------------------------------------------------


def _params(fn: FuncDef) -> list[tuple[ast.arg, ast.expr | None, bool]]:
    """(arg, default, is_splat) in source order."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(
        a.defaults
    )
    out: list[tuple[ast.arg, ast.expr | None, bool]] = list(
        zip(positional, defaults, [False] * len(positional), strict=True)
    )
    if a.vararg is not None:
        out.append((a.vararg, None, True))
    out.extend(zip(a.kwonlyargs, a.kw_defaults, [False] * len(a.kwonlyargs), strict=True))
    if a.kwarg is not None:
        out.append((a.kwarg, None, True))
    return out


def extract_inputs(file: FileContext, fn: FuncDef) -> list[InputField]:
    src = file.src
    inputs: dict[str, InputField] = {}
    order = 0
    for arg, default, splat in _params(fn):
        if arg.annotation is None:
            if default is not None:
                raise src.fail(arg, f"input '{arg.arg}' of {fn.name}() has no type annotation")
            continue  # Cog ignores bare parameters (self, and any other)
        if splat:
            raise src.fail(
                arg, f"*{arg.arg} with a type annotation cannot be an input of {fn.name}()"
            )
        try:
            ann = annot.from_node(src, arg.annotation)
            itype = resolve_input(ann, file.imports, file.typed_dicts)
        except Unsupported as exc:
            raise src.fail(arg, f"input '{arg.arg}': {exc}") from exc
        ftype = field_type_of(itype)
        info = InputInfo()
        if default is not None:
            v = value_of(src, default, src.between(arg, default))
            ref = (
                None
                if is_input_call(src, v, file.imports)
                else _resolve_reference(src, v, file.registry)
            )
            if is_input_call(src, v, file.imports):
                info = parse_input_call(src, default, arg.arg, file.scope)  # type: ignore[arg-type]
            elif ref is not None:
                info = ref
            else:
                lit = _resolve_default(src, v, file.scope)
                if lit is None:
                    raise src.fail(
                        default,
                        f"input '{arg.arg}': default `{v.text}` cannot be read statically; "
                        "use a literal (string, number, bool, None, list), a module-level constant "
                        "or Input(default=...)",
                    )
                info = InputInfo(default=lit)
            if info.accept is not None and ftype.primitive not in ("Path", "File"):
                raise src.fail(
                    default, f"input '{arg.arg}': accept= is only valid on Path or File inputs"
                )
        if itype.kind == "union" and (
            info.choices
            or any(
                x is not None
                for x in (info.ge, info.le, info.min_length, info.max_length, info.regex)
            )
        ):
            raise src.fail(
                arg, f"input '{arg.arg}': constraints and choices are not supported on union inputs"
            )
        inputs[arg.arg] = InputField(arg.arg, order, ftype, itype, info)
        order += 1
    return list(inputs.values())


def _decorator_expr(dec: ast.expr) -> ast.expr:
    return dec.func if isinstance(dec, ast.Call) else dec


def _is_cog_decorator(src: Source, expr: ast.expr, imports: Imports, name: str) -> bool:
    if isinstance(expr, ast.Attribute):
        head, _, attr = src.seg(expr).partition(".")
        return attr == name and imports.is_cog(head, "cog")
    if isinstance(expr, ast.Name):
        return imports.is_cog(expr.id, name)
    return False


def is_streaming(file: FileContext, fn: FuncDef) -> bool:
    return any(
        _is_cog_decorator(file.src, _decorator_expr(d), file.imports, "streaming")
        for d in fn.decorator_list
    )


def concurrency_max(file: FileContext, fn: FuncDef) -> int | None:
    src = file.src
    for dec in fn.decorator_list:
        if not _is_cog_decorator(src, _decorator_expr(dec), file.imports, "concurrent"):
            continue
        if not isinstance(dec, ast.Call) or not (dec.args or dec.keywords):
            return 1
        if dec.args or len(dec.keywords) != 1 or dec.keywords[0].arg != "max":
            raise src.fail(dec, "@concurrent only supports a literal integer max=... argument")
        lit = parse_default(src, keyword_value(src, dec.keywords[0]))
        if lit is None or lit.kind != "int":
            raise src.fail(dec, "@concurrent max must be an integer literal")
        if int(lit.value) < 1:
            raise src.fail(dec, "@concurrent max must be at least 1")
        return int(lit.value)
    return None


def _check_concurrency(file: FileContext, fn: FuncDef) -> tuple[int | None, bool]:
    n = concurrency_max(file, fn)
    is_async = isinstance(fn, ast.AsyncFunctionDef)
    if n is not None and n > 1 and not is_async:
        raise file.src.fail(fn, f"@concurrent(max={n}) requires an async {fn.name}() method")
    return n, is_async


def read_predictor(folder: Path, rel: str, ref: str, train: bool) -> Predictor:
    src = Source.read(folder, rel)
    file = load_file(folder, src, train, {}, set())
    tfile, fn = find_target(file, ref)
    inputs = extract_inputs(tfile, fn)
    if fn.returns is None:
        raise tfile.src.fail(fn, f"{fn.name}() has no return type annotation")
    try:
        ann = annot.from_node(tfile.src, fn.returns)
        output = OutputResolver(tfile.imports, tfile.models).resolve(ann)
    except Unsupported as exc:
        raise tfile.src.fail(fn.returns, f"output of {fn.name}(): {exc}") from exc
    streaming = is_streaming(tfile, fn)
    if streaming and output.kind not in ("iterator", "concat_iterator"):
        raise tfile.src.fail(
            fn,
            "@streaming requires an Iterator[...], AsyncIterator[...], ConcatenateIterator[...] "
            "or AsyncConcatenateIterator[...] return type",
        )
    n, is_async = _check_concurrency(tfile, fn)
    return Predictor(inputs, output, train, streaming and not train, n, is_async)


def read_concurrency(folder: Path, rel: str, ref: str, train: bool) -> tuple[int | None, bool]:
    """Only what Cog reads for the image's COG_MAX_CONCURRENCY: the decorator and async-ness."""
    src = Source.read(folder, rel)
    file = load_file(folder, src, train, {}, set())
    tfile, fn = find_target(file, ref)
    return _check_concurrency(tfile, fn)
