"""Python source as Cog's static reader sees it: literal values read from the text, not evaluated.

Cog reads its predictor with a concrete syntax tree and takes values from the source text (a
string's characters between its quotes, escapes left as written). To produce the same schema, this
module reads values the same way from Python's own ``ast`` plus the exact source segments.
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.cogschema.errors import UnsupportedPredictor


@dataclass(frozen=True)
class Lit:
    """A literal value as Cog keeps it (kind one of none/bool/int/float/str/list/set/dict)."""

    kind: str
    value: Any = None
    items: tuple[Lit, ...] = ()
    pairs: tuple[tuple[Lit, Lit], ...] = ()

    def to_json(self) -> Any:
        if self.kind in ("list", "set"):
            return [i.to_json() for i in self.items]
        if self.kind == "dict":
            out: dict[str, Any] = {}
            for k, v in self.pairs:
                out[k.value if k.kind == "str" else _go_print(k.to_json())] = v.to_json()
            return out
        return self.value


NONE = Lit("none")


def _go_print(value: Any) -> str:
    """fmt.Sprintf("%v") of a key that is not a string (Go's spelling of bool, nil, numbers)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return str(value)


_LINE_END = re.compile(r"\r\n|\r|\n")
_PARSE_LOCK = threading.Lock()


@dataclass
class Source:
    """One parsed Python file of the model folder."""

    path: Path
    rel: str  # path relative to the model folder, as Cog names it
    text: str
    tree: ast.Module
    _lines: list[bytes] = field(default_factory=list, repr=False)

    @classmethod
    def read(cls, folder: Path, rel: str) -> Source:
        path = folder / rel
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UnsupportedPredictor("is not UTF-8 text", path=rel) from exc
        try:
            with _PARSE_LOCK:  # CPython 3.11's AST builder is not thread-safe
                tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            raise UnsupportedPredictor(
                f"is not valid Python ({exc.msg})", path=rel, line=exc.lineno
            ) from exc
        return cls(path=path, rel=rel, text=text, tree=tree)

    def __post_init__(self) -> None:
        pieces = _LINE_END.split(self.text)
        self._lines = [p.encode("utf-8") for p in pieces]

    def _slice(self, l1: int, c1: int, l2: int, c2: int) -> str:
        if l1 == l2:
            return self._lines[l1 - 1][c1:c2].decode("utf-8", "replace")
        parts = [self._lines[l1 - 1][c1:]]
        parts.extend(self._lines[l1 : l2 - 1])
        parts.append(self._lines[l2 - 1][:c2])
        return b"\n".join(parts).decode("utf-8", "replace")

    def seg(self, node: ast.AST) -> str:
        """The exact source text of a node (Cog's tree-sitter node content)."""
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return ""
        return self._slice(node.lineno, node.col_offset, end_line, end_col)  # type: ignore[attr-defined]

    def between(self, a: ast.AST, b: ast.AST) -> str:
        """Source text from the end of a to the start of b."""
        end_line = getattr(a, "end_lineno", None) or 1
        end_col = getattr(a, "end_col_offset", None) or 0
        return self._slice(end_line, end_col, getattr(b, "lineno", 1), getattr(b, "col_offset", 0))

    def fail(self, node: ast.AST | None, message: str) -> UnsupportedPredictor:
        line = getattr(node, "lineno", None) if node is not None else None
        return UnsupportedPredictor(message, path=self.rel, line=line)


@dataclass(frozen=True)
class Val:
    """An expression in a value position: the node, its text, and whether it sat in parentheses.

    Cog's reader sees ``(...)`` around a value as a parenthesised expression, which none of its
    literal readers accept (a multi-line description in parentheses is dropped, for example).
    """

    node: ast.expr
    text: str
    wrapped: bool = False


def value_of(src: Source, node: ast.expr, before: str = "") -> Val:
    """Wrap a value; ``before`` is the source between its '=' and the value itself."""
    wrapped = "(" in re.sub(r"#[^\n]*", "", before)
    text = src.seg(node)
    if wrapped:
        text = "(" + text + ")"
    return Val(node, text, wrapped)


def keyword_value(src: Source, kw: ast.keyword) -> Val:
    full = src.seg(kw)
    inner = src.seg(kw.value)
    head = full[: len(full) - len(inner)] if full.endswith(inner) else full
    if kw.arg is not None and head.startswith(kw.arg):
        head = head[len(kw.arg) :]
    head = head.replace("=", "", 1)
    wrapped = "(" in re.sub(r"#[^\n]*", "", head)
    return Val(kw.value, "(" + inner + ")" if wrapped else inner, wrapped)


def element(src: Source, node: ast.expr) -> Val:
    return Val(node, src.seg(node))


# --- literal readers, each mirroring what Cog's reader accepts -----------------------------------


def parse_default(src: Source, v: Val) -> Lit | None:
    """A literal default (None, bool, number, string, list, dict, set, tuple), else None."""
    if v.wrapped:
        return None
    node = v.node
    if isinstance(node, ast.Constant):
        c = node.value
        if c is None:
            return NONE
        if c is True or c is False:
            return Lit("bool", c)
        if isinstance(c, int):
            n = go_parse_int(v.text)
            return None if n is None else Lit("int", n)
        if isinstance(c, float):
            f = go_parse_float(v.text)
            return None if f is None else Lit("float", f)
        if isinstance(c, str):
            s = raw_string(v.text)
            return None if s is None else Lit("str", s)
        return None
    if isinstance(node, ast.JoinedStr):
        s = raw_string(v.text)
        return None if s is None else Lit("str", s)
    if isinstance(node, ast.List):
        items = parse_list(src, v)
        return None if items is None else Lit("list", items=tuple(items))
    if isinstance(node, ast.Set):
        out = []
        for e in node.elts:
            item = parse_default(src, element(src, e))
            if item is None:
                return None
            out.append(item)
        return Lit("set", items=tuple(out))
    if isinstance(node, ast.Dict):
        pairs = []
        for k, val in zip(node.keys, node.values, strict=True):
            if k is None:
                continue
            kl = parse_default(src, element(src, k))
            vl = parse_default(src, element(src, val))
            if kl is not None and vl is not None:
                pairs.append((kl, vl))
        return Lit("dict", pairs=tuple(pairs))
    if isinstance(node, ast.UnaryOp):
        text = v.text.strip()
        n = go_parse_int(text)
        if n is not None:
            return Lit("int", n)
        f = go_parse_float(text)
        if f is not None:
            return Lit("float", f)
        return None
    if isinstance(node, ast.Tuple) and v.text.startswith("("):
        kept = [parse_default(src, element(src, e)) for e in node.elts]
        return Lit("list", items=tuple(i for i in kept if i is not None))
    return None


def parse_list(src: Source, v: Val) -> list[Lit] | None:
    if v.wrapped or not isinstance(v.node, ast.List):
        return None
    out = []
    for e in v.node.elts:
        item = parse_default(src, element(src, e))
        if item is None:
            return None
        out.append(item)
    return out


def raw_string(text: str) -> str | None:
    """A string literal's characters between its quotes, escapes as written (Cog's reading)."""
    if text.startswith('"""') or text.startswith("'''"):
        return text[3:-3] if len(text) >= 6 else None
    if text.startswith('"') or text.startswith("'"):
        return text[1:-1] if len(text) >= 2 else None
    if text.startswith('r"') or text.startswith("r'"):
        return text[2:-1] if len(text) >= 3 else None
    return None


def parse_bool(v: Val) -> bool | None:
    if v.text == "True":
        return True
    if v.text == "False":
        return False
    return None


_GO_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)")


def go_parse_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64)."""
    if not _GO_INT.fullmatch(text) or "__" in text or text.endswith("_"):
        return None
    body = text.lstrip("+-")
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        body = "0o" + body[1:]  # Go reads a leading 0 as octal
    try:
        n = int(("-" if text.startswith("-") else "") + body, 0)
    except ValueError:
        return None
    if not -(2**63) <= n < 2**63:
        return None
    return n


_GO_FLOAT = re.compile(
    r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", re.I
)


def go_parse_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64) for the decimal spellings Python source can hold."""
    text = text.strip()
    if _GO_FLOAT.fullmatch(text):
        try:
            return float(text)
        except ValueError:
            return None
    body = text.lstrip("+-")
    if body[:2].lower() == "0x" and "p" in body.lower() and "_" not in body:
        try:
            f = float.fromhex(body)
        except ValueError:
            return None
        return -f if text.startswith("-") else f
    return None
