"""Type annotations read into the small tree Cog resolves: a name, a generic, or a union."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from skiff.cogschema.errors import Unsupported
from skiff.cogschema.literals import Source


@dataclass(frozen=True)
class Ann:
    """kind: "simple" (name), "generic" (name[args]) or "union" (args joined by |)."""

    kind: str
    name: str = ""
    args: tuple[Ann, ...] = ()


def simple(name: str) -> Ann:
    return Ann("simple", name)


def from_node(src: Source, node: ast.expr) -> Ann:
    """Read an annotation expression the way Cog's reader does."""
    if isinstance(node, ast.Name):
        return simple(node.id)
    if isinstance(node, ast.Attribute):
        return simple(src.seg(node))
    if isinstance(node, ast.Subscript):
        outer = src.seg(node.value)
        sl = node.slice
        if isinstance(sl, ast.Tuple) and not src.seg(sl).startswith("("):
            parts = list(sl.elts)
        else:
            parts = [sl]
        args = tuple(from_node(src, p) for p in parts)
        if not args:
            return simple(outer)
        return Ann("generic", outer, args)
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, ast.BitOr):
            raise Unsupported("unsupported type: non-union binary operator in type annotation")
        left = from_node(src, node.left)
        right = from_node(src, node.right)
        members: list[Ann] = []
        for side in (left, right):
            members.extend(side.args if side.kind == "union" else (side,))
        return Ann("union", "", tuple(members))
    if isinstance(node, ast.Constant) and node.value is None:
        return simple("None")
    text = src.seg(node)
    if isinstance(node, (ast.Constant, ast.JoinedStr)) and isinstance(
        getattr(node, "value", ""), str
    ):
        inner = text.lstrip("\"'").rstrip("\"'")
        parsed = from_string(inner)
        if parsed is None:
            raise Unsupported(f"unsupported type: string annotation: {text}")
        return parsed
    parsed = from_string(text)
    if parsed is None:
        raise Unsupported(f"unsupported type: {type(node).__name__}: {text}")
    return parsed


def from_string(s: str) -> Ann | None:
    """Read an annotation written as text (a forward reference, or a bare class annotation)."""
    s = s.strip()
    if not s:
        return None
    if len(s) >= 2 and ((s[0] == s[-1] == '"') or (s[0] == s[-1] == "'")):
        return from_string(s[1:-1])
    pipes = _split_top(s, "|")
    if len(pipes) > 1:
        members = []
        for p in pipes:
            m = from_string(p.strip())
            if m is None:
                return None
            members.append(m)
        return Ann("union", "", tuple(members))
    bracket = s.find("[")
    if bracket >= 0 and s.endswith("]"):
        outer = s[:bracket].strip()
        args = []
        for p in _split_top(s[bracket + 1 : -1], ","):
            a = from_string(p.strip())
            if a is None:
                return None
            args.append(a)
        if not args:
            return None
        return Ann("generic", outer, tuple(args))
    for part in s.split("."):
        if not part or not all(c.isascii() and (c.isalnum() or c == "_") for c in part):
            return None
    return simple(s)


def _split_top(s: str, sep: str) -> list[str]:
    depth, start, parts = 0, 0, []
    for i, c in enumerate(s):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def unwrap_optional(ann: Ann) -> Ann | None:
    """Optional[X], Union[X, None] or X | None -> X (names as written, not resolved)."""
    if ann.kind == "generic" and ann.name == "Optional" and len(ann.args) == 1:
        return ann.args[0]
    if ((ann.kind == "generic" and ann.name == "Union") or ann.kind == "union") and len(
        ann.args
    ) == 2:
        for i, a in enumerate(ann.args):
            if a.kind == "simple" and a.name == "None":
                return ann.args[1 - i]
    return None
