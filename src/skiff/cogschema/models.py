"""Output classes: BaseModel and TypedDict subclasses, in the predictor file and files it imports.

Cog follows imports to other files of the model folder (``from output_types import Output``,
``from .types import Output``, ``import helpers`` then ``helpers.Output``), never into installed
packages and never into a package's ``__init__.py``.
"""

from __future__ import annotations

import ast
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from skiff.cogschema import annot
from skiff.cogschema.errors import Unsupported
from skiff.cogschema.imports import Entry, Imports
from skiff.cogschema.literals import Source, element, parse_default
from skiff.cogschema.types import ModelField, ModelMap

# Top-level packages Cog never looks for in the model folder.
_EXTERNAL = """
builtins typing typing_extensions collections abc enum dataclasses os sys io json re math pathlib
functools itertools contextlib concurrent asyncio multiprocessing threading logging warnings
unittest pytest numpy torch tensorflow jax scipy sklearn transformers diffusers accelerate
safetensors PIL cv2 skimage requests httpx aiohttp fastapi flask pydantic cog
"""
KNOWN_EXTERNAL = frozenset(_EXTERNAL.split())


def is_known_external(module: str) -> bool:
    i = module.find(".")
    top = module[:i] if i > 0 else module
    return top.lstrip(".") in KNOWN_EXTERNAL


def module_to_file(module: str, source_path: str = "") -> str:
    """A module name as a .py path relative to the model folder ("" when it cannot be one)."""
    if module.startswith(".") and source_path:
        level = len(module) - len(module.lstrip("."))
        clean = module.lstrip(".")
        if not clean:
            return ""
        base = posixpath.dirname(source_path)
        for _ in range(level - 1):
            if not base:
                break
            base = posixpath.dirname(base)
        return (
            posixpath.join(base, *clean.split(".")) + ".py"
            if base
            else posixpath.join(*clean.split(".")) + ".py"
        )
    clean = module.lstrip(".")
    if not clean:
        return ""
    return posixpath.join(*clean.split(".")) + ".py"


def nested_module(module: str, original: str) -> str:
    if not module or not original:
        return module
    if module == ".":
        return "." + original
    return f"{module}.{original}"


@dataclass
class Summary:
    imports: Imports | None
    models: ModelMap
    typed_dicts: set[str]
    source_path: str


@dataclass
class ModelContext:
    folder: Path
    imports: Imports
    source_path: str
    loaded: dict[str, Summary]
    typed_dicts: set[str] = field(default_factory=set)
    resolved: ModelMap | None = None

    def collect(self, src: Source) -> ModelMap:
        """Every top-level BaseModel / TypedDict class of a file, in source order."""
        models: ModelMap = {}
        for stmt in src.tree.body:
            if not isinstance(stmt, ast.ClassDef):
                continue
            is_model = _inherits_base_model(src, stmt, self.imports)
            is_td, required_default, parents = self._typed_dict_info(src, stmt)
            if not is_model and not is_td:
                continue
            fields = _class_fields(src, stmt, self.imports, is_td, required_default)
            if is_td:
                inherited = []
                for p in parents:
                    if p in models:
                        inherited.append(models[p])
                    elif self.resolved is not None and p in self.resolved:
                        inherited.append(self.resolved[p])
                fields = _merge_fields(inherited, fields)
            models[stmt.name] = fields
            if is_td:
                self.typed_dicts.add(stmt.name)
        return models

    def _typed_dict_info(self, src: Source, cls: ast.ClassDef) -> tuple[bool, bool, list[str]]:
        is_td, required_default, parents = False, True, []
        for base in cls.bases:
            if isinstance(base, ast.Name):
                if self.imports.is_typed_dict(base.id) or base.id == "TypedDict":
                    is_td = True
                elif base.id in self.typed_dicts:
                    is_td = True
                    parents.append(base.id)
            elif isinstance(base, ast.Attribute):
                text = src.seg(base)
                if text.endswith(".TypedDict"):
                    is_td = True
                elif text in self.typed_dicts:
                    is_td = True
                    parents.append(text)
        for kw in cls.keywords:
            if kw.arg == "total" and src.seg(kw.value).strip() == "False":
                required_default = False
        return is_td, required_default, parents

    # --- following imports into other files of the model folder ------------------------------

    def load_module(self, module: str) -> ModelMap | None:
        if is_known_external(module):
            return None
        py = module_to_file(module, self.source_path)
        if not py:
            return None
        key = posixpath.normpath(py)
        if key in self.loaded:
            return self.loaded[key].models
        self.loaded[key] = Summary(None, {}, set(), key)
        path = self.folder / key
        if not path.is_file():
            del self.loaded[key]
            return None
        src = Source.read(self.folder, key)
        ctx = ModelContext(self.folder, Imports.collect(src.tree), key, self.loaded)
        models = ctx.collect(src)
        ctx.resolved = models
        ctx.resolve_external(models)
        ctx.resolved = models
        models.update(ctx.collect(src))
        self.loaded[key] = Summary(ctx.imports, models, ctx.typed_dicts, key)
        _refresh_aliases(self.loaded)
        ctx.resolve_external(models)
        self.loaded[key] = Summary(ctx.imports, models, ctx.typed_dicts, key)
        return models

    def _load_for_import(self, entry: Entry) -> tuple[str, ModelMap | None, bool]:
        models = self.load_module(entry.module)
        if models is not None:
            return entry.module, models, False
        module = nested_module(entry.module, entry.original)
        if module == entry.module:
            return entry.module, None, False
        return module, self.load_module(module), True

    def _summary_of(self, module: str) -> Summary | None:
        py = module_to_file(module, self.source_path)
        return self.loaded.get(posixpath.normpath(py)) if py else None

    def resolve_external(self, models: ModelMap) -> None:
        for local, entry in list(self.imports.names.items()):
            module, module_models, nested = self._load_for_import(entry)
            if module_models is not None:
                for name, fields in list(module_models.items()):
                    models[f"{local}.{name}"] = fields
                summary = self._summary_of(module)
                if summary is not None:
                    self.typed_dicts.update(f"{local}.{n}" for n in summary.typed_dicts)
                if nested or entry.original == entry.module or entry.module == ".":
                    continue
                src_tds = summary.typed_dicts if summary is not None else self.typed_dicts
                _propagate(local, entry, module_models, models, src_tds, self.typed_dicts)
                for name, fields in list(module_models.items()):
                    models.setdefault(name, fields)
                continue
            _propagate(local, entry, models, models, self.typed_dicts, self.typed_dicts)


def _propagate(
    local: str, entry: Entry, src: ModelMap, dst: ModelMap, src_tds: set[str], dst_tds: set[str]
) -> None:
    if entry.original in src:
        dst[local] = src[entry.original]
    if entry.original in src_tds:
        dst_tds.add(local)


def _refresh_aliases(loaded: dict[str, Summary]) -> None:
    for summary in list(loaded.values()):
        if summary.imports is None:
            continue
        for local, entry in list(summary.imports.names.items()):
            py = module_to_file(entry.module, summary.source_path)
            if not py:
                continue
            imported = loaded.get(posixpath.normpath(py))
            if imported is None:
                continue
            _propagate(
                local,
                entry,
                imported.models,
                summary.models,
                imported.typed_dicts,
                summary.typed_dicts,
            )


def _inherits_base_model(src: Source, cls: ast.ClassDef, imports: Imports) -> bool:
    for base in cls.bases:
        if isinstance(base, ast.Name) and (
            base.id == "BaseModel" or imports.is_base_model(base.id)
        ):
            return True
        if isinstance(base, ast.Attribute) and src.seg(base).endswith(".BaseModel"):
            return True
    return False


def _merge_fields(parents: list[list[ModelField]], own: list[ModelField]) -> list[ModelField]:
    merged: dict[str, ModelField] = {}
    for group in [*parents, own]:
        for f in group:
            merged[f.name] = f
    return list(merged.values())


def _class_fields(
    src: Source, cls: ast.ClassDef, imports: Imports, is_td: bool, required_default: bool
) -> list[ModelField]:
    fields = []
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        try:
            ann = annot.from_node(src, stmt.annotation)
        except Unsupported:
            continue  # Cog skips a field whose annotation it cannot read
        default = parse_default(src, element(src, stmt.value)) if stmt.value is not None else None
        ann, key_required = _td_field(ann, imports, is_td, required_default)
        fields.append(ModelField(stmt.target.id, ann, default, key_required))
    return fields


def _td_field(
    ann: annot.Ann, imports: Imports, is_td: bool, required_default: bool
) -> tuple[annot.Ann, bool | None]:
    if not is_td:
        return ann, None
    if ann.kind != "generic" or len(ann.args) != 1:
        return ann, required_default
    name = ann.name
    if name == "NotRequired" or name.endswith(".NotRequired"):
        return ann.args[0], False
    if name == "Required" or name.endswith(".Required"):
        return ann.args[0], True
    if imports.is_td_qualifier(name):
        entry = imports.get(name)
        if entry is not None and entry.original == "NotRequired":
            return ann.args[0], False
        if entry is not None and entry.original == "Required":
            return ann.args[0], True
    return ann, required_default
