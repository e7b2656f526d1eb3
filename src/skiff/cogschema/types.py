"""Cog's type rules: which annotations an input or an output may have, and their JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from skiff.cogschema.annot import Ann, unwrap_optional
from skiff.cogschema.errors import Unsupported
from skiff.cogschema.imports import Imports
from skiff.cogschema.literals import Lit

# Primitive names as Cog knows them, whatever module they were imported from.
PRIMITIVES = ("bool", "float", "int", "str", "Path", "File", "Secret", "Any")


def primitive_json(p: str) -> dict[str, Any]:
    if p == "bool":
        return {"type": "boolean"}
    if p == "float":
        return {"type": "number"}
    if p == "int":
        return {"type": "integer"}
    if p == "str":
        return {"type": "string"}
    if p in ("Path", "File"):
        return {"type": "string", "format": "uri"}
    if p == "Secret":
        return {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
    return {"type": "object"}


def unsupported(msg: str) -> Unsupported:
    return Unsupported(f"unsupported type: {msg}")


def unresolvable_imported(name: str, module: str) -> Unsupported:
    return Unsupported(
        f"cannot resolve type '{name}' (imported from '{module}'): a type from another package "
        "cannot be read statically. Mark a JSON-shaped third-party type opaque with "
        f"`Annotated[{name}, Opaque]` (from typing import Annotated; from cog import Opaque), or "
        "define it as a BaseModel subclass in a local file"
    )


def unresolvable(name: str) -> Unsupported:
    return Unsupported(
        f"cannot resolve type '{name}': it is not a primitive type (str, int, float, bool, Path) "
        "and no BaseModel definition was found for it"
    )


def optional_output() -> Unsupported:
    return Unsupported("unsupported output type: Optional is not allowed as a return type")


# --- inputs ---------------------------------------------------------------------------------------

REQUIRED, OPTIONAL, REPEATED, OPTIONAL_REPEATED = (
    "required",
    "optional",
    "repeated",
    "optional_repeated",
)


@dataclass(frozen=True)
class FieldType:
    """Cog's flat view of an input type: a primitive and a cardinality."""

    primitive: str
    repetition: str = REQUIRED


@dataclass(frozen=True)
class InputType:
    """kind: primitive, any, array or union."""

    kind: str
    primitive: str = "Any"
    elem: InputType | None = None
    variants: tuple[InputType, ...] = ()
    nullable: bool = False

    def json(self) -> dict[str, Any]:
        if self.kind == "primitive":
            schema = primitive_json(self.primitive)
        elif self.kind == "array":
            schema = {
                "type": "array",
                "items": self.elem.json() if self.elem else {"type": "object"},
            }
        elif self.kind == "union":
            variants = []
            for v in self.variants:
                vs = v.json()
                if self.nullable:
                    vs["nullable"] = True
                variants.append(vs)
            schema = {"anyOf": variants}
        else:
            schema = {"type": "object"}
        if self.nullable:
            schema["nullable"] = True
        return schema


def input_prim(p: str) -> InputType:
    return InputType("any") if p == "Any" else InputType("primitive", p)


def field_type_of(t: InputType) -> FieldType:
    rep = OPTIONAL if t.nullable else REQUIRED
    if t.kind == "primitive":
        return FieldType(t.primitive, rep)
    if t.kind == "array":
        arep = OPTIONAL_REPEATED if t.nullable else REPEATED
        if t.elem is not None and t.elem.kind == "primitive":
            return FieldType(t.elem.primitive, arep)
        return FieldType("Any", arep)
    return FieldType("Any", rep)


def _input_from_field(ft: FieldType) -> InputType:
    t = InputType("any") if ft.primitive == "Any" else input_prim(ft.primitive)
    if ft.repetition in (REPEATED, OPTIONAL_REPEATED):
        t = InputType("array", elem=t)
    if ft.repetition in (OPTIONAL, OPTIONAL_REPEATED):
        t = replace(t, nullable=True)
    return t


def unwrap_opaque(ann: Ann, imports: Imports) -> Ann | None:
    """Annotated[X, Opaque] -> X."""
    if ann.kind != "generic" or not imports.is_annotated(ann.name) or len(ann.args) < 2:
        return None
    for meta in ann.args[1:]:
        if meta.kind == "simple" and imports.is_opaque(meta.name):
            return ann.args[0]
    return None


def _opaque_optional(ann: Ann, imports: Imports) -> Ann | None:
    if ann.kind == "generic":
        name = imports.container_name(ann.name)
        if name is None:
            return None
        if name == "Optional" and len(ann.args) == 1:
            return ann.args[0]
        if name == "Union" and len(ann.args) == 2:
            for i, a in enumerate(ann.args):
                if a.kind == "simple" and a.name == "None":
                    return ann.args[1 - i]
    return unwrap_optional(ann)


def _opaque_field_type(inner: Ann, imports: Imports) -> FieldType:
    unwrapped = unwrap_opaque(inner, imports)
    if unwrapped is not None:
        return _opaque_field_type(unwrapped, imports)
    if inner.kind == "simple" and imports.container_name(inner.name) in ("List", "list"):
        return FieldType("Any", REPEATED)
    if inner.kind == "generic":
        outer = imports.container_name(inner.name)
        opt = _opaque_optional(inner, imports)
        if opt is not None:
            ft = _opaque_field_type(opt, imports)
            return FieldType("Any", OPTIONAL_REPEATED if ft.repetition == REPEATED else OPTIONAL)
        if outer is None:
            return FieldType("Any")
        if outer in ("List", "list"):
            return FieldType("Any", REPEATED)
        if outer == "Optional" and len(inner.args) == 1:
            ft = _opaque_field_type(inner.args[0], imports)
            return FieldType("Any", OPTIONAL_REPEATED if ft.repetition == REPEATED else OPTIONAL)
    if inner.kind == "union":
        opt = unwrap_optional(inner)
        if opt is not None:
            ft = _opaque_field_type(opt, imports)
            return FieldType("Any", OPTIONAL_REPEATED if ft.repetition == REPEATED else OPTIONAL)
    return FieldType("Any")


def resolve_input(ann: Ann, imports: Imports, typed_dicts: set[str]) -> InputType:
    inner = unwrap_opaque(ann, imports)
    if inner is not None:
        return _input_from_field(_opaque_field_type(inner, imports))
    if ann.kind == "simple":
        name = ann.name
        if name in typed_dicts:
            return InputType("any")
        qualified_module = ""
        q = imports.qualified(name)
        if q is not None:
            name, entry = q
            qualified_module = entry.module if entry else ""
            if entry is not None and f"{entry.original}.{name}" in typed_dicts:
                return InputType("any")
        if name in typed_dicts or name in ("dict", "Dict"):
            return InputType("any")
        if name not in PRIMITIVES:
            if qualified_module:
                raise unresolvable_imported(name, qualified_module)
            entry2 = imports.get(name)
            if entry2 is not None:
                raise unresolvable_imported(name, entry2.module)
            raise unsupported(name)
        return input_prim(name)
    if ann.kind == "generic":
        outer = ann.name
        q = imports.qualified(outer)
        if q is not None:
            outer = q[0]
        if outer in ("dict", "Dict"):
            return InputType("any")
        if outer == "Optional":
            if len(ann.args) != 1:
                raise unsupported(f"Optional expects exactly 1 type argument, got {len(ann.args)}")
            return replace(resolve_input(ann.args[0], imports, typed_dicts), nullable=True)
        if outer == "Union":
            return _resolve_union(ann.args, imports, typed_dicts)
        if imports.is_annotated(ann.name):
            return resolve_input(ann.args[0], imports, typed_dicts)
        if outer in ("List", "list"):
            if len(ann.args) != 1:
                raise unsupported(f"List expects exactly 1 type argument, got {len(ann.args)}")
            opaque = unwrap_opaque(ann.args[0], imports)
            if opaque is not None:
                el = _input_from_field(_opaque_field_type(opaque, imports))
            else:
                el = resolve_input(ann.args[0], imports, typed_dicts)
            if el.nullable or el.kind in ("array", "union"):
                raise unsupported("nested generics like List[Optional[X]] are not supported")
            return InputType("array", elem=el)
        raise unsupported(f"{outer}[...] is not a supported input type")
    return _resolve_union(ann.args, imports, typed_dicts)


def _resolve_union(args: tuple[Ann, ...], imports: Imports, typed_dicts: set[str]) -> InputType:
    variants: list[InputType] = []
    nullable = False
    for arg in args:
        if arg.kind == "simple" and arg.name == "None":
            nullable = True
            continue
        if arg.kind == "union" or (arg.kind == "generic" and arg.name == "Union"):
            raise unsupported("nested union inputs are not supported")
        v = resolve_input(arg, imports, typed_dicts)
        if v.kind == "union":
            raise unsupported("nested union inputs are not supported")
        variants.append(v)
    if not variants:
        raise unsupported("union inputs must include at least one non-None type")
    if len(variants) == 1:
        return replace(variants[0], nullable=variants[0].nullable or nullable)
    for v in variants:
        _check_union_variant(v)
    return InputType("union", variants=tuple(variants), nullable=nullable)


def _check_union_variant(t: InputType) -> None:
    if t.nullable:
        raise unsupported("nested nullable variants are not supported in union inputs")
    if t.kind == "primitive" and t.primitive in ("Path", "File", "Secret"):
        raise unsupported(f"{t.primitive} is not supported in union inputs")
    if t.kind == "array" and t.elem is not None:
        _check_union_variant(t.elem)


# --- outputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelField:
    name: str
    ann: Ann
    default: Lit | None = None
    key_required: bool | None = None


@dataclass(frozen=True)
class SchemaField:
    type: SchemaType
    default: Lit | None
    required: bool


@dataclass(frozen=True)
class SchemaType:
    """kind: primitive, any, array, dict, object, iterator or concat_iterator."""

    kind: str
    primitive: str = "Any"
    items: SchemaType | None = None
    fields: tuple[tuple[str, SchemaField], ...] | None = None
    nullable: bool = False

    def json(self, top: bool = False) -> dict[str, Any]:
        from skiff.cogschema.gojson import Ordered

        out: dict[str, Any]
        if self.kind == "primitive":
            out = primitive_json(self.primitive)
        elif self.kind == "any":
            out = {"type": "object"}
        elif self.kind == "array":
            out = {
                "type": "array",
                "items": self.items.json() if self.items else {"type": "object"},
            }
        elif self.kind == "dict":
            out = {"type": "object"}
            if self.items is not None:
                out["additionalProperties"] = self.items.json()
        elif self.kind == "object":
            if self.fields is None:
                out = {"type": "object"}
            else:
                props = Ordered()
                required = []
                for name, f in self.fields:
                    prop = f.type.json()
                    prop["title"] = title_case(name)
                    if f.required and f.default is None:
                        required.append(name)
                    props[name] = prop
                out = {"type": "object", "properties": props}
                if required:
                    out["required"] = required
        else:
            out = {
                "type": "array",
                "items": self.items.json() if self.items else {"type": "object"},
                "x-cog-array-type": "iterator",
            }
            if self.kind == "concat_iterator":
                out["x-cog-array-display"] = "concatenate"
        if top:
            out["title"] = "Output"
        if self.nullable:
            out["nullable"] = True
        return out


ModelMap = dict[str, list[ModelField]]


@dataclass
class OutputResolver:
    imports: Imports
    models: ModelMap
    seen: set[str] = field(default_factory=set)

    def resolve(self, ann: Ann) -> SchemaType:
        inner = unwrap_opaque(ann, self.imports)
        if inner is not None:
            if _opaque_optional(inner, self.imports) is not None:
                raise optional_output()
            return self._opaque(inner)
        if ann.kind == "generic" and self.imports.is_annotated(ann.name):
            return self.resolve(ann.args[0])
        if ann.kind == "simple":
            return self._simple(ann)
        if ann.kind == "generic":
            return self._generic(ann)
        if unwrap_optional(ann) is not None:
            raise optional_output()
        raise unsupported("union types are not supported as output")

    def _opaque(self, inner: Ann) -> SchemaType:
        if inner.kind == "simple" and self.imports.container_name(inner.name) in ("list", "List"):
            return SchemaType("array", items=SchemaType("primitive", "Any"))
        if (
            inner.kind == "generic"
            and self.imports.container_name(inner.name) in ("list", "List")
            and len(inner.args) == 1
        ):
            return SchemaType("array", items=SchemaType("primitive", "Any"))
        return SchemaType("primitive", "Any")

    def _simple(self, ann: Ann) -> SchemaType:
        name = ann.name
        if name in self.models:
            return self._named_model(name)
        q = self.imports.qualified(name)
        qualified_module = ""
        if q is not None:
            name, entry = q
            if entry is not None:
                qualified_module = entry.module
                key = f"{entry.original}.{name}"
                if key in self.models:
                    return self._named_model(key)
            else:
                key = f".{name}"
                if key in self.models:
                    return self._named_model(key)
        elif name in self.models:
            return self._named_model(name)
        if name in ("Any", "dict", "Dict"):
            return SchemaType("any")
        if self.imports.container_name(ann.name) in ("list", "List"):
            return SchemaType("array", items=SchemaType("any"))
        if name not in PRIMITIVES:
            if qualified_module:
                raise unresolvable_imported(name, qualified_module)
            entry2 = self.imports.get(name)
            if entry2 is not None:
                raise unresolvable_imported(name, entry2.module)
            raise unresolvable(name)
        return SchemaType("primitive", name)

    def _named_model(self, name: str) -> SchemaType:
        if name in self.seen:
            return SchemaType("any")
        self.seen.add(name)
        try:
            return self._model(self.models[name])
        finally:
            self.seen.discard(name)

    def _generic(self, ann: Ann) -> SchemaType:
        outer = ann.name
        q = self.imports.qualified(outer)
        if q is not None:
            outer = q[0]
        if outer in ("dict", "Dict"):
            if len(ann.args) == 2:
                return SchemaType("dict", items=self.resolve(ann.args[1]))
            raise unsupported("dict expects 0 or 2 type arguments")
        if outer == "Optional":
            if len(ann.args) != 1:
                raise unsupported("Optional expects exactly 1 type argument")
            raise optional_output()
        if outer == "Union":
            if unwrap_optional(Ann("union", "", ann.args)) is not None:
                raise optional_output()
            raise unsupported("union types are not supported as output")
        if self.imports.container_name(ann.name) in ("List", "list"):
            if len(ann.args) != 1:
                raise unsupported("list expects exactly 1 type argument")
            return SchemaType("array", items=self.resolve(ann.args[0]))
        if outer in ("Iterator", "AsyncIterator"):
            if len(ann.args) != 1:
                raise unsupported("Iterator expects exactly 1 type argument")
            return SchemaType("iterator", items=self.resolve(ann.args[0]))
        if outer in ("ConcatenateIterator", "AsyncConcatenateIterator"):
            if len(ann.args) != 1:
                raise unsupported("ConcatenateIterator expects exactly 1 type argument")
            inner = ann.args[0]
            if inner.kind != "simple":
                raise unsupported("ConcatenateIterator element type must be a simple type")
            if inner.name != "str":
                raise Unsupported(f"ConcatenateIterator element type must be str, got {inner.name}")
            return SchemaType("concat_iterator", items=SchemaType("primitive", "str"))
        raise unsupported(f"{outer}[...] is not a supported output type")

    def _model(self, model_fields: list[ModelField]) -> SchemaType:
        fields: dict[str, SchemaField] = {}
        for f in model_fields:
            try:
                st, required = self._field(f.ann)
            except Unsupported as exc:
                raise Unsupported(f'field "{f.name}": {exc}') from exc
            if f.key_required is not None:
                required = f.key_required
            if f.default is not None:
                required = False
            fields[f.name] = SchemaField(st, f.default, required)
        return SchemaType("object", fields=tuple(fields.items()))

    def _field(self, ann: Ann) -> tuple[SchemaType, bool]:
        inner = unwrap_opaque(ann, self.imports)
        if inner is not None:
            opt = self._field_optional(inner)
            if opt is not None:
                return replace(self._opaque(opt), nullable=True), False
            return self._opaque(inner), True
        if ann.kind == "generic" and self.imports.is_annotated(ann.name):
            return self._field(ann.args[0])
        opt = self._field_optional(ann)
        if opt is not None:
            return replace(self.resolve(opt), nullable=True), False
        return self.resolve(ann), True

    def _field_optional(self, ann: Ann) -> Ann | None:
        return _opaque_optional(ann, self.imports) or unwrap_optional(ann)


def title_case(s: str) -> str:
    """snake_case -> Title Case, as Cog titles inputs and fields."""
    return " ".join(p[:1].upper() + p[1:] if p else p for p in s.split("_"))
