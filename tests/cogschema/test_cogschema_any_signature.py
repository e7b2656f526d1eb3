"""Any predictor signature gives a schema or UnsupportedPredictor (exit 2), never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from skiff import cogschema

ANNOTATIONS = [
    "str",
    "int",
    "float",
    "bool",
    "Path",
    "Secret",
    "File",
    "Any",
    "dict",
    "list",
    "None",
    "list[str]",
    "List[int]",
    "Optional[str]",
    "str | None",
    "int | str",
    "Union[int, float, None]",
    "list[str] | None",
    "Optional[List[Path]]",
    "dict[str, int]",
    "Annotated[Thing, Opaque]",
    "Annotated[list[Thing], Opaque]",
    "Literal['a']",
    "'Out'",
    "Thing",
    "typing.List[str]",
    "cog.Path",
    "list[list[int]]",
    "Iterator[str]",
    "ConcatenateIterator[int]",
    "Out",
    "tuple[int, int]",
    "Optional[Union[int, str]]",
    "1 + 2",
    "Path | str",
    "TD",
]
DEFAULTS = [
    None,
    "None",
    "1",
    "-2.5",
    "'x'",
    '"""doc"""',
    "[1, 'a']",
    "{'a': 1}",
    "(1, 2)",
    "{1, 2}",
    "CONST",
    "os.getcwd()",
    "Input()",
    "Input(default=None)",
    "Input(default=CONST, ge=0, le=9)",
    "Input(choices=CHOICES)",
    "Input(choices=list(D.keys()) + ['z'])",
    "Input(choices=f())",
    "Input(default_factory=list)",
    "Input(description=('a' 'b'), min_length=1, regex='^a$')",
    "Input(accept='image/*')",
    "Input(deprecated=True, default=[])",
    "Inputs.a",
    "Inputs.m(3)",
    "0x1F",
    "True",
    "f'x'",
    "b'x'",
]
HEADER = """\
import os
import typing
from typing import Annotated, Any, Iterator, List, Literal, Optional, TypedDict, Union

import cog
from cog import BaseModel, BasePredictor, ConcatenateIterator, File, Input, Opaque, Path, Secret

CONST = 3
CHOICES = ["a", "b"]
D = {"x": 1, "y": 2}


class Thing:
    pass


class TD(TypedDict):
    a: int


class Out(BaseModel):
    a: str
    b: Optional["Out"] = None


class Inputs:
    a = Input(default="q")

    @staticmethod
    def m(default: int) -> Input:
        return Input(default=default, ge=0)


class Predictor(BasePredictor):
"""

param = st.tuples(st.sampled_from([*ANNOTATIONS, ""]), st.sampled_from(DEFAULTS))


@settings(max_examples=150, deadline=None)
@given(
    params=st.lists(param, max_size=4),
    output=st.sampled_from(ANNOTATIONS),
    decorator=st.sampled_from(["", "@cog.streaming", "@cog.concurrent(max=2)", "@cog.concurrent"]),
    asynchronous=st.booleans(),
)
def test_any_signature_gives_a_schema_or_a_refusal(
    params: list[tuple[str, str | None]], output: str, decorator: str, asynchronous: bool
) -> None:
    args = []
    for i, (ann, default) in enumerate(params):
        text = f"p{i}" + (f": {ann}" if ann else "") + (f" = {default}" if default else "")
        args.append(text)
    # A parameter without a default may not follow one with a default.
    if any(d for _, d in params):
        args = [a if "=" in a else a + " = None" for a in args]
    body = f"    {decorator}\n" if decorator else ""
    body += (
        f"    {'async ' if asynchronous else ''}def predict(self, {', '.join(args)}) -> {output}:\n"
    )
    body += "        raise NotImplementedError\n"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "predict.py").write_text(HEADER + body)
        try:
            raw = cogschema.render(folder, "predict.py:Predictor")
        except cogschema.UnsupportedPredictor as exc:
            assert str(exc).startswith("predict.py"), str(exc)
            event("refused")
            return
        event("schema")
        schema = json.loads(raw)
        assert schema["openapi"] == "3.0.2"
        assert list(schema["components"]["schemas"]["Input"]["properties"]) == [
            f"p{i}" for i, (ann, _) in enumerate(params) if ann
        ]
