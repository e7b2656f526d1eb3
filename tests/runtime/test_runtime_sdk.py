"""The `cog` SDK surface and input validation, in-process."""

from __future__ import annotations

import pathlib
import subprocess
import time
from typing import Any

import cog
import pytest
from cog.config import predictor_ref_from_yaml
from cog.introspect import inspect_predictor
from cog.predictor import PredictorRef, load_target
from cog.validation import FileRef, validate_inputs

from conftest import FIXTURES, RUNTIME, python_stdlib_only, runtime_env


def kitchen_specs() -> Any:
    target = load_target(PredictorRef.parse("predict.py:Predictor"), str(FIXTURES / "kitchen"))
    return inspect_predictor(target, "predict").inputs


def errors_of(raw: Any) -> dict[str, tuple[str, str]]:
    _, errors = validate_inputs(kitchen_specs(), raw)
    return {".".join(map(str, e.loc[2:])): (e.msg, e.type) for e in errors}


VALID = {"prompt": "hi", "image": "https://example.com/a.png", "api_key": "k"}


def test_runtime_dir_holds_the_cog_package() -> None:
    assert (RUNTIME / "cog" / "__init__.py").is_file()
    assert (RUNTIME / "cog" / "server" / "http.py").is_file()


def test_public_names() -> None:
    for name in (
        "BasePredictor",
        "BaseRunner",
        "Input",
        "Path",
        "File",
        "Secret",
        "ConcatenateIterator",
        "BaseModel",
        "CancelationException",
    ):
        assert hasattr(cog, name), name
    assert issubclass(cog.Path, pathlib.Path)
    assert not issubclass(cog.CancelationException, Exception)


def test_import_needs_only_the_stdlib_and_is_fast() -> None:
    def timed(code: str) -> float:
        started = time.monotonic()
        subprocess.run([*python_stdlib_only(), "-c", code], env=runtime_env(), check=True)
        return time.monotonic() - started

    bare = timed("pass")  # measured alike, so a loaded machine does not fail the test
    assert timed("from cog import BasePredictor, Input, Path; import cog.server.http") - bare < 1.0


def test_secret_never_shows_its_value() -> None:
    s = cog.Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.get_secret_value() == "hunter2"


def test_base_model_fields_and_defaults() -> None:
    class Out(cog.BaseModel):
        a: int
        b: str = "x"

    assert Out(a=1).dict() == {"a": 1, "b": "x"}
    with pytest.raises(TypeError, match="missing field: a"):
        Out()
    with pytest.raises(TypeError, match="no field"):
        Out(a=1, c=2)


def test_valid_inputs_are_coerced_and_defaulted() -> None:
    values, errors = validate_inputs(kitchen_specs(), {**VALID, "steps": "7", "scale": 2})
    assert errors == []
    assert values["steps"] == 7 and values["scale"] == 2.0
    assert values["image"] == FileRef("https://example.com/a.png")
    assert isinstance(values["api_key"], cog.Secret)
    assert values["sampler"] == "ddim" and values["seed"] is None and values["mask"] is None
    assert values["tags"] == ["a", "b"]
    values["tags"].append("c")  # defaults are copied, never shared between predictions
    again, _ = validate_inputs(kitchen_specs(), VALID)
    assert again["tags"] == ["a", "b"]


def test_missing_and_wrong_inputs_name_the_field() -> None:
    assert errors_of({}) == {
        "prompt": ("field required", "value_error.missing"),
        "image": ("field required", "value_error.missing"),
        "api_key": ("field required", "value_error.missing"),
    }
    bad = errors_of(
        {
            **VALID,
            "steps": "many",
            "scale": 11,
            "sampler": "euler",
            "level": 9,
            "name": "ABC",
            "tags": ["ok", 3, {}],
            "upscale": "maybe",
            "image": "/etc/passwd",
        }
    )
    assert bad["steps"] == ("value is not a valid integer", "type_error.integer")
    assert bad["scale"] == (
        "ensure this value is less than or equal to 10",
        "value_error.number.not_le",
    )
    assert bad["sampler"][1] == "type_error.enum" and "'ddim'" in bad["sampler"][0]
    assert bad["level"][1] == "type_error.enum"
    assert bad["name"] == ('string does not match regex "^[a-z]+$"', "value_error.str.regex")
    assert bad["tags.2"] == ("str type expected", "type_error.str")
    assert "tags.1" not in bad  # numbers are accepted as strings, as pydantic v1 did
    assert bad["upscale"][1] == "type_error.bool"
    assert bad["image"][1] == "value_error.url.scheme"


def test_input_must_be_an_object() -> None:
    _, errors = validate_inputs(kitchen_specs(), ["x"])
    assert [e.to_json() for e in errors] == [
        {"loc": ["body", "input"], "msg": "value is not a valid dict", "type": "type_error.dict"}
    ]


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ('predict: "predict.py:Predictor"\n', "predict.py:Predictor"),
        ("build:\n  gpu: true\npredict: 'src/p.py:P'  # comment\n", "src/p.py:P"),
        ("predict: predict.py:Predictor # c\n", "predict.py:Predictor"),
        ("build:\n  predict: nested.py:No\n", None),
        ("image: r8.im/a/b\n", None),
    ],
)
def test_cog_yaml_predict_line(text: str, ref: str | None) -> None:
    assert predictor_ref_from_yaml(text) == ref


def test_older_and_newer_import_paths() -> None:
    from cog.server.exceptions import CancelationException

    assert CancelationException is cog.CancelationException

    @cog.streaming
    def one() -> str:
        return "x"

    @cog.streaming()
    def two() -> str:
        return "y"

    assert (one(), two()) == ("x", "y")


def test_captured_stdout_still_offers_the_real_streams_attributes() -> None:
    code = (
        "import sys\n"
        "from cog import logcapture\n"
        "logcapture.install()\n"
        "sys.stdout.buffer.write(b'raw\\n')\n"
        "sys.stdout.flush()\n"
        "print(sys.stdout.errors == sys.__stdout__.errors, sys.stdout.isatty())\n"
    )
    result = subprocess.run(
        [*python_stdlib_only(), "-c", code], env=runtime_env(), capture_output=True, text=True
    )
    assert result.stdout == "raw\nTrue False\n", result.stderr
