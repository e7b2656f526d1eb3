"""The client side of ``skiff predict``, as Cog's CLI has it (pkg/cli/predict.go,
pkg/predict/input.go, pkg/util/files in replicate/cog): how ``-i`` values are typed by the
schema, how outputs are written and printed."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from skiff.errors import InvalidInput
from skiff.runtime.cli_io import go_json, output_target, parse_inputs, render

SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "properties": {
                    "n": {"type": "integer"},
                    "x": {"type": "number"},
                    "flag": {"type": "boolean"},
                    "text": {"type": "string"},
                    "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                    "counts": {"type": "array", "items": {"type": "integer"}},
                    "options": {"type": "object"},
                    "color": {"allOf": [{"$ref": "#/components/schemas/color"}]},
                    "doc": {"type": "string", "format": "uri"},
                }
            },
            "color": {"type": "integer", "enum": [1, 2]},
        }
    }
}


def test_values_are_typed_by_the_schema(tmp_path: Path) -> None:
    got = parse_inputs(
        [
            "n=3",
            "x=2.5",
            "flag=true",
            "text=42",
            "either=7",
            "color=2",
            'options={"a": 1}',
            "counts=[1, 2]",
        ],
        SCHEMA,
        tmp_path,
    )
    assert got == {
        "n": 3,
        "x": 2.5,
        "flag": True,
        "text": "42",
        "either": 7,
        "color": 2,
        "options": {"a": 1},
        "counts": [1, 2],
    }


def test_what_does_not_parse_is_sent_as_given_for_the_server_to_refuse(tmp_path: Path) -> None:
    got = parse_inputs(["n=three", "flag=yes"], SCHEMA, tmp_path)
    assert got == {"n": "three", "flag": "yes"}
    # Surrounding quotes are taken off, as Cog's CLI does.
    assert parse_inputs(['text="quoted"'], SCHEMA, tmp_path) == {"text": "quoted"}


def test_a_repeated_name_is_an_array_of_its_item_type(tmp_path: Path) -> None:
    assert parse_inputs(["counts=1", "counts=2"], SCHEMA, tmp_path) == {"counts": [1, 2]}
    assert parse_inputs(["counts=5"], SCHEMA, tmp_path) == {"counts": [5]}


def test_a_file_input_is_a_data_url_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hi")
    got = parse_inputs(["doc=@a.txt"], SCHEMA, tmp_path)
    assert got == {"doc": "data:text/plain;base64," + base64.b64encode(b"hi").decode()}
    with pytest.raises(InvalidInput, match="cannot read"):
        parse_inputs(["doc=@missing.txt"], SCHEMA, tmp_path)


def test_bad_input_flags(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="NAME=VALUE"):
        parse_inputs(["novalue"], SCHEMA, tmp_path)
    with pytest.raises(InvalidInput, match="no input named 'nn'"):
        parse_inputs(["nn=1"], SCHEMA, tmp_path)


def test_json_is_printed_as_go_prints_it() -> None:
    assert go_json({"b": 4.0, "a": [0.5, 1e-7, 0.00001, 1.5e21], "t": "<&>é"}) == (
        "{\n"
        '  "a": [\n'
        "    0.5,\n"
        "    1e-7,\n"
        "    0.00001,\n"
        "    1.5e+21\n"
        "  ],\n"
        '  "b": 4,\n'
        '  "t": "\\u003c\\u0026\\u003eé"\n'
        "}"
    )
    assert go_json([]) == "[]"
    assert go_json(3) == "3"


def _data(text: str, mime: str = "text/plain") -> str:
    return f"data:{mime};base64," + base64.b64encode(text.encode()).decode()


def test_output_paths(tmp_path: Path) -> None:
    assert output_target(None, tmp_path) == tmp_path / "output"
    (tmp_path / "out").mkdir()
    assert output_target("out", tmp_path) == tmp_path / "out" / "output"
    assert output_target("result.png", tmp_path) == tmp_path / "result.png"
    with pytest.raises(InvalidInput, match="does not exist"):
        output_target("nowhere/result.png", tmp_path)


def test_file_outputs_are_written_with_the_extension_of_their_type(tmp_path: Path) -> None:
    uri = {"type": "string", "format": "uri"}
    one = render({"output": _data("x")}, uri, {}, tmp_path / "output", write_values=False)
    assert one.stdout is None and one.written == [tmp_path / "output.txt"]
    many = render(
        {"output": [_data("a"), _data("b")]},
        {"type": "array", "items": uri},
        {},
        tmp_path / "output",
        write_values=False,
    )
    assert many.written == [tmp_path / "output.0.txt", tmp_path / "output.1.txt"]
    assert (tmp_path / "output.1.txt").read_text() == "b"


def test_values_print_or_go_to_the_output_file(tmp_path: Path) -> None:
    text = render({"output": "hi"}, {"type": "string"}, {}, tmp_path / "o", write_values=False)
    assert text.stdout == "hi"
    nums = render({"output": [1, 2]}, {"type": "array"}, {}, tmp_path / "o", write_values=False)
    assert nums.stdout == "[\n  1,\n  2\n]"
    written = render({"output": "hi"}, {"type": "string"}, {}, tmp_path / "o", write_values=True)
    assert written.stdout is None and (tmp_path / "o").read_text() == "hi"
