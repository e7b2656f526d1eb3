"""What ``cog predict`` does on the client side, so that ``skiff predict`` answers the same.

Inputs: ``-i NAME=VALUE`` is typed by the model's schema (an integer input gets ``3``, not
``"3"``; an object or array input takes JSON; a repeated name makes an array), and
``NAME=@path`` sends the file as a data URL. Outputs: a string is printed as it is, a file (or
a list of files) is written to the output path (``output.EXT`` by default) and named on stderr,
anything else is printed as indented JSON — as Cog's CLI prints it (sorted keys, ``<>&``
escaped, whole floats without ``.0``). Paths are taken from the current directory.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from skiff.errors import InvalidInput

_DEFAULT_OUTPUT = "output"
_INT32 = (-(2**31), 2**31 - 1)


# -- inputs -------------------------------------------------------------------------------------


def parse_inputs(items: list[str], schema: dict[str, Any], cwd: Path) -> dict[str, Any]:
    values: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput(
                f"cannot read the input {item!r}: expected NAME=VALUE",
                "write inputs as -i NAME=VALUE, or -i NAME=@path for a file",
            )
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        values.setdefault(name, []).append(value)
    properties = _input_properties(schema)
    unknown = sorted(set(values) - set(properties)) if properties is not None else []
    if unknown:
        known = ", ".join(sorted(properties or {})) or "none"
        raise InvalidInput(
            f"the model has no input named {unknown[0]!r}", f"its inputs are: {known}"
        )
    out: dict[str, Any] = {}
    for name, vals in values.items():
        prop = _resolve(schema, (properties or {}).get(name))
        if len(vals) == 1:
            out[name] = _single(vals[0], prop, schema, cwd, name)
        else:
            item_schema = _resolve(schema, _array_items(schema, prop))
            out[name] = [_item(v, item_schema, schema, cwd, name) for v in vals]
    return out


def _single(
    value: str, prop: dict[str, Any] | None, root: dict[str, Any], cwd: Path, name: str
) -> Any:
    if value.startswith("@"):
        return data_url(cwd / value[1:], name)
    if prop is None:
        return value
    kind = _concrete_type(root, prop)
    if kind == "object":
        return _json_or_string(value)
    if kind == "array":
        parsed = _json_or_string(value)
        if isinstance(parsed, list):
            return parsed
        return [_scalar(value, _resolve(root, _array_items(root, prop)), root)]
    return _scalar(value, prop, root)


def _item(
    value: str, item_schema: dict[str, Any] | None, root: dict[str, Any], cwd: Path, name: str
) -> Any:
    if value.startswith("@"):
        return data_url(cwd / value[1:], name)
    return _scalar(value, item_schema, root)


def _scalar(value: str, prop: dict[str, Any] | None, root: dict[str, Any]) -> Any:
    """The value as the schema's scalar type when it parses as one, else the string (the
    server then answers 422, as it does for Cog's CLI)."""
    if prop is None:
        return value
    accepts = _accepted_types(root, prop)
    if value in ("true", "false") and "boolean" in accepts:
        return value == "true"
    if accepts & {"integer", "number"} and re.fullmatch(r"[+-]?\d+", value):
        number = int(value)
        if _INT32[0] <= number <= _INT32[1]:
            return number
    if "number" in accepts:
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _json_or_string(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def data_url(path: Path, name: str) -> str:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"input {name!r}: cannot read {path}: {exc.strerror}",
            "a file input is NAME=@PATH, the path taken from the current directory",
        ) from exc
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def _input_properties(schema: dict[str, Any]) -> dict[str, Any] | None:
    component = schema.get("components", {}).get("schemas", {}).get("Input")
    if not isinstance(component, dict):
        return None
    props = component.get("properties")
    return props if isinstance(props, dict) else {}


def _resolve(root: dict[str, Any], node: Any) -> dict[str, Any] | None:
    """Follows ``$ref`` (and a lone ``allOf: [$ref]``, as Cog's generator writes for choices)."""
    for _ in range(10):
        if not isinstance(node, dict):
            return None
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        all_of = node.get("allOf")
        if "type" not in node and isinstance(all_of, list) and len(all_of) == 1:
            node = {**all_of[0], **{k: v for k, v in node.items() if k != "allOf"}}
            continue
        return node
    return None


def _accepted_types(root: dict[str, Any], node: dict[str, Any] | None) -> set[str]:
    node = _resolve(root, node)
    if node is None:
        return set()
    kinds: set[str] = set()
    kind = node.get("type")
    if isinstance(kind, str):
        kinds.add(kind)
    elif isinstance(kind, list):
        kinds.update(k for k in kind if isinstance(k, str))
    for key in ("anyOf", "oneOf", "allOf"):
        for member in node.get(key) or []:
            kinds |= _accepted_types(root, member)
    return kinds


def _concrete_type(root: dict[str, Any], node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, str):
        return kind
    for key in ("allOf", "anyOf"):
        for member in node.get(key) or []:
            resolved = _resolve(root, member)
            if resolved and isinstance(resolved.get("type"), str):
                return str(resolved["type"])
    return None


def _array_items(root: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any] | None:
    node = _resolve(root, node)
    if node is None:
        return None
    items = node.get("items")
    if isinstance(items, dict):
        return items
    for key in ("anyOf", "oneOf", "allOf"):
        for member in node.get(key) or []:
            found = _array_items(root, member)
            if found is not None:
                return found
    return None


# -- outputs ------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """What to print on stdout, and the files written (each named on stderr)."""

    stdout: str | None = None
    written: list[Path] = field(default_factory=list)


def output_schema(schema: dict[str, Any], train: bool = False) -> dict[str, Any] | None:
    path = "/trainings" if train else "/predictions"
    try:
        response = schema["paths"][path]["post"]["responses"]["200"]
        body = response["content"]["application/json"]["schema"]
    except (KeyError, TypeError):
        return None
    resolved = _resolve(schema, body)
    if resolved is None:
        return None
    return _resolve(schema, (resolved.get("properties") or {}).get("output"))


def output_target(option: str | None, cwd: Path) -> Path:
    """Cog's ``-o``: a file path, or a folder to write ``output.EXT`` into; default ``./output``."""
    if not option:
        target = cwd / _DEFAULT_OUTPUT
        if target.is_dir():
            raise InvalidInput(
                f"the default output name {target} is a folder", "give the output path with -o"
            )
        return target
    target = cwd / os.path.expanduser(option)
    if target.is_dir():
        return target / _DEFAULT_OUTPUT
    if not target.parent.is_dir():
        raise InvalidInput(f"the output folder {target.parent} does not exist", "create it first")
    return target


def render(
    prediction: dict[str, Any],
    out_schema: dict[str, Any] | None,
    root: dict[str, Any],
    target: Path,
    *,
    write_values: bool,
) -> Rendered:
    """The output as ``cog predict`` presents it; ``write_values``: ``-o`` was given, so a
    string or JSON output goes to that file too, as with Cog."""
    output = prediction.get("output")
    rendered = Rendered()
    if output is None:
        return rendered
    if _is_uri(out_schema):
        rendered.written.append(write_data_url(str(output), target))
        return rendered
    items = _resolve(root, (out_schema or {}).get("items"))
    if (out_schema or {}).get("type") == "array" and _is_uri(items) and isinstance(output, list):
        for i, item in enumerate(output):
            stem, ext = _split_ext(target.name)
            rendered.written.append(write_data_url(str(item), target.with_name(f"{stem}.{i}{ext}")))
        return rendered
    if (out_schema or {}).get("type") == "string" and isinstance(output, str):
        text = output
    else:
        text = go_json(output)
    if write_values:
        target.write_text(text, encoding="utf-8")
        rendered.written.append(target)
    else:
        rendered.stdout = text
    return rendered


def _is_uri(node: dict[str, Any] | None) -> bool:
    return bool(node) and node.get("type") == "string" and node.get("format") == "uri"  # type: ignore[union-attr]


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or ext.isdigit():
        return name, ""
    return stem, "." + ext


def write_data_url(url: str, destination: Path) -> Path:
    """Writes a file output (a data URL) to ``destination``, the extension from its type when
    the destination has none, as Cog's CLI does."""
    header, comma, payload = url.partition(",")
    if not url.startswith("data:") or not comma:
        raise InvalidInput(f"the model returned a file output that is not a data URL: {url[:80]}")
    meta = header[len("data:") :]
    mime = meta.split(";")[0]
    if ";base64" in meta:
        data = base64.b64decode(payload)
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    stem, ext = _split_ext(destination.name)
    if not ext:
        ext = (mimetypes.guess_extension(mime) or "") if mime and mime != "None" else ""
        destination = destination.with_name(stem + ext)
    destination.write_bytes(data)
    return destination


def go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it indented: sorted keys, ``<>&`` escaped, UTF-8 as
    is, and numbers as Go formats a float64 (``4`` for 4.0, ``0.00001``, ``1e-7``)."""
    floats: list[str] = []
    tag = secrets.token_hex(8)  # markers no string of the output can spell
    text = json.dumps(_go_numbers(value, floats, tag), indent=2, sort_keys=True, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    # Each float stood in as a marker string; put Go's spelling of it back in its place.
    marker = re.compile(rf'"\\u0000{tag}:(\d+)\\u0000"')
    return marker.sub(lambda m: floats[int(m.group(1))], text)


def _go_numbers(value: Any, floats: list[str], tag: str) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) < 1e21:
            return int(value)
        floats.append(_go_float(value))
        return f"\x00{tag}:{len(floats) - 1}\x00"
    if isinstance(value, list):
        return [_go_numbers(v, floats, tag) for v in value]
    if isinstance(value, dict):
        return {k: _go_numbers(v, floats, tag) for k, v in value.items()}
    return value


def _go_float(number: float) -> str:
    """strconv.FormatFloat(f, 'f' or 'e', -1, 64) as encoding/json picks and cleans it."""
    if abs(number) < 1e-6 or abs(number) >= 1e21:
        mantissa, _, exponent = repr(number).partition("e")
        if not exponent:  # repr had no exponent: make one from the shortest digits
            mantissa, _, exponent = f"{Decimal(repr(number)):e}".partition("e")
        return f"{mantissa}e{exponent[0]}{exponent[1:].lstrip('0') or '0'}"
    return format(Decimal(repr(number)), "f")
