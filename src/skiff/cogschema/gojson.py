"""Key order and number spelling exactly as Cog's Go encoder writes them.

Cog builds most JSON objects as Go maps (written with sorted keys) and a few as insertion-ordered
maps (paths, component schemas, properties). Building the schema from ``Ordered`` and plain dicts
and then calling ``finish`` gives a dict whose iteration order is the order of Cog's bytes;
``dumps`` writes those bytes (Go escapes ``<``, ``>``, ``&`` and spells floats its own way).
"""

from __future__ import annotations

import decimal
import math
from typing import Any


class Ordered(dict[str, Any]):
    """A JSON object Cog writes in insertion order (everything else is written with sorted keys)."""


def finish(value: Any, *, sort_all: bool = False) -> Any:
    """Plain dicts in Go's key order; integral floats as ints (Go writes 2.0 as ``2``)."""
    if isinstance(value, dict):
        keep = isinstance(value, Ordered) and not sort_all
        keys = list(value) if keep else sorted(value)
        return {k: finish(value[k], sort_all=sort_all) for k in keys}
    if isinstance(value, list):
        return [finish(v, sort_all=sort_all) for v in value]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"JSON cannot hold the number {value}")
        if value.is_integer() and abs(value) < 1e21:
            return int(value)
    return value


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialise like Go's json.Marshal (indent=None) or json.MarshalIndent(v, "", "  ")."""
    out: list[str] = []
    _encode(value, out, indent, 0)
    return "".join(out)


def _encode(value: Any, out: list[str], indent: int | None, depth: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, str):
        out.append(go_string(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(",")
            _newline(out, indent, depth + 1)
            out.append(go_string(str(k)))
            out.append(": " if indent is not None else ":")
            _encode(v, out, indent, depth + 1)
        _newline(out, indent, depth)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _newline(out, indent, depth + 1)
            _encode(v, out, indent, depth + 1)
        _newline(out, indent, depth)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _newline(out: list[str], indent: int | None, depth: int) -> None:
    if indent is not None:
        out.append("\n" + " " * (indent * depth))


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})


def go_string(s: str) -> str:
    parts = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            parts.append(esc)
        elif ord(ch) < 0x20:
            parts.append(f"\\u{ord(ch):04x}")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def go_float(f: float) -> str:
    """strconv.AppendFloat(f, 'f' or 'e', -1, 64) as encoding/json chooses and tidies it."""
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"JSON cannot hold the number {f}")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        text = repr(f)  # shortest digits; Python's exponent form matches Go's ("e-07", "e+21")
        if "e" not in text:
            text = f"{decimal.Decimal(text):e}"
        mant, _, exp = text.partition("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-")
        if len(digits) < 2:
            digits = "0" + digits
        if sign == "-" and digits.startswith("0") and len(digits) == 2:
            digits = digits[1:]
        return f"{mant}e{sign}{digits}"
    text = format(decimal.Decimal(repr(f)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "-0" if math.copysign(1.0, f) < 0 else "0"
    return text
