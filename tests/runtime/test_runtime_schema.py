"""OpenAPI generation compared with what Cog publishes for the same predictors."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cog.introspect import IntrospectionError
from cog.schema import openapi_schema

from conftest import FIXTURES, python_stdlib_only, runtime_env


def schemas(folder: str, ref: str = "predict.py:Predictor") -> dict[str, Any]:
    return openapi_schema(ref, FIXTURES / folder)["components"]["schemas"]  # type: ignore[no-any-return]


# What Cog publishes for fixtures/kitchen/predict.py (pydantic-era conventions kept by Cog:
# x-order, title-cased titles, choices as allOf + a component named after the input).
KITCHEN_INPUT = {
    "title": "Input",
    "type": "object",
    "required": ["prompt", "image", "api_key"],
    "properties": {
        "prompt": {
            "x-order": 0,
            "title": "Prompt",
            "type": "string",
            "description": "Input prompt",
        },
        "image": {
            "x-order": 1,
            "title": "Image",
            "type": "string",
            "format": "uri",
            "description": "Grayscale input image",
        },
        "scale": {
            "x-order": 2,
            "title": "Scale",
            "type": "number",
            "default": 1.5,
            "description": "Factor to scale image by",
            "minimum": 0,
            "maximum": 10,
        },
        "steps": {
            "x-order": 3,
            "title": "Steps",
            "type": "integer",
            "default": 50,
            "minimum": 1,
            "maximum": 500,
        },
        "sampler": {
            "x-order": 4,
            "allOf": [{"$ref": "#/components/schemas/sampler"}],
            "default": "ddim",
        },
        "seed": {
            "x-order": 5,
            "title": "Seed",
            "type": "integer",
            "nullable": True,
            "description": "Random seed",
        },
        "upscale": {"x-order": 6, "title": "Upscale", "type": "boolean", "default": False},
        "api_key": {
            "x-order": 7,
            "title": "Api Key",
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "x-cog-secret": True,
            "description": "API key",
        },
        "tags": {
            "x-order": 8,
            "title": "Tags",
            "type": "array",
            "items": {"type": "string"},
            "default": ["a", "b"],
            "description": "Tags",
        },
        "name": {
            "x-order": 9,
            "title": "Name",
            "type": "string",
            "default": "x",
            "minLength": 1,
            "maxLength": 8,
            "pattern": "^[a-z]+$",
        },
        "old": {
            "x-order": 10,
            "title": "Old",
            "type": "string",
            "default": "legacy",
            "deprecated": True,
        },
        "level": {"x-order": 11, "allOf": [{"$ref": "#/components/schemas/level"}], "default": 2},
        "mask": {
            "x-order": 12,
            "title": "Mask",
            "type": "string",
            "format": "uri",
            "nullable": True,
        },
    },
}


def test_inputs_match_cog() -> None:
    s = schemas("kitchen")
    assert s["Input"] == KITCHEN_INPUT
    # Property order is the signature order, which UIs use besides x-order.
    assert list(s["Input"]["properties"]) == list(KITCHEN_INPUT["properties"])


def test_choices_become_enum_components() -> None:
    s = schemas("kitchen")
    assert s["sampler"] == {
        "title": "sampler",
        "description": "An enumeration.",
        "enum": ["ddim", "k_lms", "pndm"],
        "type": "string",
    }
    assert s["level"] == {
        "title": "level",
        "description": "An enumeration.",
        "enum": [1, 2, 3],
        "type": "integer",
    }


def test_document_frame_matches_cog() -> None:
    doc = openapi_schema("predict.py:Predictor", FIXTURES / "kitchen")
    assert doc["openapi"] == "3.0.2"
    assert doc["info"] == {"title": "Cog", "version": "0.1.0"}
    assert set(doc["paths"]) >= {
        "/",
        "/health-check",
        "/predictions",
        "/predictions/{prediction_id}",
        "/predictions/{prediction_id}/cancel",
        "/shutdown",
    }
    post = doc["paths"]["/predictions"]["post"]
    assert post["operationId"] == "predict_predictions_post"
    assert post["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    s = doc["components"]["schemas"]
    assert s["PredictionRequest"]["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert s["PredictionResponse"]["properties"]["output"] == {
        "$ref": "#/components/schemas/Output"
    }
    assert s["Status"]["enum"] == ["starting", "processing", "succeeded", "canceled", "failed"]
    assert s["Output"] == {"title": "Output", "type": "string"}
    json.dumps(doc)  # must be plain JSON


def test_concatenate_iterator_output() -> None:
    assert schemas("stream")["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string"},
        "x-cog-array-type": "iterator",
        "x-cog-array-display": "concatenate",
    }


def test_iterator_of_paths_output() -> None:
    s = schemas("stream", "predict.py:Frames")
    assert s["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "x-cog-array-type": "iterator",
    }
    assert s["Input"]["properties"]["count"]["default"] == 2
    assert "required" not in s["Input"]


def test_function_predictor_with_list_output() -> None:
    s = schemas("stream", "predict.py:listing")
    assert s["Output"] == {"title": "Output", "type": "array", "items": {"type": "integer"}}


def test_base_model_output_is_an_object() -> None:
    assert schemas("structured")["Output"] == {
        "title": "Output",
        "type": "object",
        "properties": {
            "text": {"title": "Text", "type": "string"},
            "score": {"title": "Score", "type": "number"},
            "file": {"title": "File", "type": "string", "format": "uri"},
            "extra": {"title": "Extra", "type": "string"},
        },
        "required": ["text", "score", "file", "extra"],
    }


def test_runner_run_method_is_introspected() -> None:
    s = schemas("structured", "predict.py:Runner")
    assert s["Input"]["properties"]["x"]["type"] == "integer"
    assert s["Input"]["required"] == ["x"]
    assert s["Output"] == {"title": "Output", "type": "integer"}


def _write_predictor(tmp_path: Path, body: str) -> Path:
    (tmp_path / "predict.py").write_text(
        "from typing import Any, Optional, Union\n"
        "from cog import BasePredictor, Input, Path\n\n" + textwrap.dedent(body)
    )
    return tmp_path


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("x: str = Input(ge=1)", "ge/le apply only to int and float"),
        ("x: int = Input(choices=[1])", "at least 2"),
        ("x: int = Input(choices=['a', 'b'])", "every choice must be a int"),
        ("x: Union[int, str]", "only Optional"),
        ("x", "missing type annotation"),
        ("x: int = Input(min_length=2)", "apply only to str"),
        ("x: str = Input(regex='(')", "invalid regex"),
        ("x: set", "unsupported type"),
    ],
)
def test_invalid_signatures_are_named(tmp_path: Path, signature: str, message: str) -> None:
    _write_predictor(
        tmp_path,
        f"""
        class Predictor(BasePredictor):
            def predict(self, {signature}) -> str:
                return ""
    """,
    )
    with pytest.raises(IntrospectionError, match=message):
        openapi_schema("predict.py:Predictor", tmp_path)


def test_float_defaults_are_published_as_floats(tmp_path: Path) -> None:
    _write_predictor(
        tmp_path,
        """
        class Predictor(BasePredictor):
            def predict(self, t: float = Input(default=1), m: Any = None) -> Any:
                return t
    """,
    )
    s = openapi_schema("predict.py:Predictor", tmp_path)["components"]["schemas"]
    default = s["Input"]["properties"]["t"]["default"]
    assert default == 1.0 and isinstance(default, float)
    assert s["Output"] == {"title": "Output"}


def test_command_prints_the_schema_as_json_from_cog_yaml(tmp_path: Path) -> None:
    _write_predictor(
        tmp_path,
        """
        print("import-time noise")

        class Predictor(BasePredictor):
            def predict(self, text: str = "hi") -> str:
                return text
    """,
    )
    (tmp_path / "cog.yaml").write_text('build:\n  gpu: false\npredict: "predict.py:Predictor"\n')
    result = subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.openapi_schema"],
        cwd=tmp_path,
        env=runtime_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["components"]["schemas"]["Input"]["properties"]["text"]["default"] == "hi"
    assert "import-time noise" in result.stderr


def test_command_reports_a_missing_predictor(tmp_path: Path) -> None:
    result = subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.openapi_schema"],
        cwd=tmp_path,
        env=runtime_env(COG_PREDICTOR="nope.py:Predictor"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "predictor file not found: nope.py" in result.stderr
    assert "Traceback" not in result.stderr
