"""Which module each top-level name of a file was imported from (Cog resolves types by it)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

_BUILTINS = ("str", "int", "float", "bool", "list", "dict", "set", "None")
_TYPING = ("typing", "typing_extensions")


@dataclass(frozen=True)
class Entry:
    module: str
    original: str


@dataclass
class Imports:
    names: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def collect(cls, tree: ast.Module) -> Imports:
        ctx = cls()
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom):
                module = "." * stmt.level + (stmt.module or "")
                if not module:
                    continue
                for alias in stmt.names:
                    if alias.name == "*":
                        continue
                    ctx.names[alias.asname or alias.name] = Entry(module, alias.name)
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    ctx.names[alias.asname or alias.name] = Entry(alias.name, alias.name)
        for b in _BUILTINS:
            ctx.names.setdefault(b, Entry("builtins", b))
        return ctx

    def get(self, name: str) -> Entry | None:
        return self.names.get(name)

    def qualified(self, name: str) -> tuple[str, Entry | None] | None:
        """alias.Type -> (Type, entry of alias); None when the name has no dot."""
        head, dot, tail = name.partition(".")
        if not dot:
            return None
        return tail, self.names.get(head)

    def is_base_model(self, name: str) -> bool:
        e = self.names.get(name)
        return (
            e is not None
            and e.module in ("cog", "pydantic", "pydantic.v1")
            and e.original == "BaseModel"
        )

    def is_typed_dict(self, name: str) -> bool:
        e = self.names.get(name)
        return e is not None and e.module in _TYPING and e.original == "TypedDict"

    def is_opaque(self, name: str) -> bool:
        q = self.qualified(name)
        if q is not None:
            return q[0] == "Opaque" and q[1] is not None and q[1].module == "cog"
        e = self.names.get(name)
        return e is not None and e.module == "cog" and e.original == "Opaque"

    def is_annotated(self, name: str) -> bool:
        q = self.qualified(name)
        if q is not None:
            e = q[1]
            return (
                q[0] == "Annotated"
                and e is not None
                and e.module in _TYPING
                and e.original == e.module
            )
        e = self.names.get(name)
        return e is not None and e.module in _TYPING and e.original == "Annotated"

    def is_td_qualifier(self, name: str) -> bool:
        e = self.names.get(name)
        return e is not None and e.module in _TYPING and e.original in ("Required", "NotRequired")

    def is_cog(self, name: str, original: str) -> bool:
        e = self.names.get(name)
        return e is not None and e.module == "cog" and e.original == original

    def container_name(self, name: str) -> str | None:
        """list/List/Optional/Union when the name surely means that typing construct."""
        q = self.qualified(name)
        if q is not None:
            e = q[1]
            if (
                e is not None
                and e.module in _TYPING
                and e.original == e.module
                and q[0] in _CONTAINERS
            ):
                return q[0]
            return None
        e = self.names.get(name)
        if e is not None:
            if e.module == "builtins" and e.original == "list":
                return "list"
            if e.module in _TYPING and e.original in _CONTAINERS:
                return e.original
            return None
        return "list" if name == "list" else None


_CONTAINERS = ("List", "Optional", "Union")
