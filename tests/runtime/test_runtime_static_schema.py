"""Reading the schema from source (no import) gives what importing gives."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from cog.schema import openapi_schema
from cog.static import StaticSchemaError, static_openapi_schema, static_predictor_info

from conftest import FIXTURES, python_stdlib_only, runtime_env
from skiff.runtime import schema_for_build

PREDICTORS = [
    ("kitchen", "predict.py:Predictor"),
    ("stream", "predict.py:Predictor"),
    ("stream", "predict.py:Frames"),
    ("stream", "predict.py:listing"),
    ("stream", "predict.py:paint"),
    ("structured", "predict.py:Predictor"),
    ("structured", "predict.py:Runner"),
    ("structured", "predict.py:Metered"),
    ("echo", "predict.py:Predictor"),
    ("echo", "predict.py:Sleeper"),
    ("echo", "predict.py:Streamer"),
    ("files", "predict.py:Predictor"),
    ("files", "predict.py:Reader"),
    ("asyncs", "predict.py:Predictor"),
    ("asyncs", "predict.py:Streamer"),
]


@pytest.mark.parametrize(("folder", "ref"), PREDICTORS)
def test_static_schema_equals_imported_schema(folder: str, ref: str) -> None:
    assert static_openapi_schema(ref, FIXTURES / folder) == openapi_schema(ref, FIXTURES / folder)


def write(tmp_path: Path, source: str) -> Path:
    (tmp_path / "predict.py").write_text(textwrap.dedent(source))
    return tmp_path


def test_needs_no_dependencies_and_resolves_constants_and_enums(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        import enum
        import typing as t

        import torch  # not installed: the static reader never imports it
        import cog

        MAX_STEPS = 100
        SIZES = ["small", "large"]

        class Mode(str, enum.Enum):
            FAST = "fast"
            GOOD = "good"

        class Out(cog.BaseModel):
            image: cog.Path
            seed: t.Optional[int]

        class Predictor(cog.BasePredictor):
            def setup(self, weights=None):
                self.model = torch.load(weights)

            def predict(
                self,
                steps: int = cog.Input(default=MAX_STEPS // 2 if False else 50, le=MAX_STEPS),
            ) -> Out:
                return self.model(steps)

        class Sized(cog.BasePredictor):
            def predict(
                self,
                size: str = cog.Input(choices=SIZES, default=SIZES[0] if False else "small"),
                mode: Mode = Mode.FAST,
                scale: "float" = -1,
            ) -> "list[cog.Path]":
                return []
    """,
    )
    with pytest.raises(StaticSchemaError, match="not a literal"):
        static_openapi_schema("predict.py:Predictor", tmp_path)
    write(
        tmp_path,
        (tmp_path / "predict.py")
        .read_text()
        .replace("MAX_STEPS // 2 if False else 50", "50")
        .replace('SIZES[0] if False else "small"', '"small"'),
    )
    schema = static_openapi_schema("predict.py:Predictor", tmp_path)["components"]["schemas"]
    assert schema["Input"]["properties"]["steps"]["maximum"] == 100
    assert schema["Output"]["properties"]["seed"] == {"title": "Seed", "type": "integer"}
    sized = static_openapi_schema("predict.py:Sized", tmp_path)["components"]["schemas"]
    assert sized["size"]["enum"] == ["small", "large"]
    assert sized["mode"]["enum"] == ["fast", "good"]
    assert sized["Input"]["properties"]["mode"]["default"] == "fast"
    assert sized["Input"]["properties"]["scale"]["default"] == -1.0
    assert sized["Output"]["items"] == {"type": "string", "format": "uri"}


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("x: MyAlias", "unknown type MyAlias"),
        ("x: int = Input(**opts)", "not static"),
        ("x: int = compute()", "not a literal"),
        ("*args: int", "must not take"),
        ("x: Local", "Local is a class of this file"),
    ],
)
def test_what_only_an_import_can_resolve_is_refused(
    tmp_path: Path, signature: str, message: str
) -> None:
    write(
        tmp_path,
        f"""
        from cog import BasePredictor, Input

        class Local:
            pass

        class Predictor(BasePredictor):
            def predict(self, {signature}) -> str:
                return ""
    """,
    )
    with pytest.raises(StaticSchemaError, match=message):
        static_openapi_schema("predict.py:Predictor", tmp_path)


def test_schema_for_build_falls_back_to_importing(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        from cog import BasePredictor

        Alias = int

        class Predictor(BasePredictor):
            def predict(self, x: Alias) -> Alias:
                return x
    """,
    )
    schema = schema_for_build(tmp_path, "predict.py:Predictor")
    assert schema["components"]["schemas"]["Input"]["properties"]["x"]["type"] == "integer"


def test_command_static_flag(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        import torch
        from cog import BasePredictor

        class Predictor(BasePredictor):
            def predict(self, x: int) -> int:
                return x
    """,
    )
    result = subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.openapi_schema", "--static"],
        cwd=tmp_path,
        env=runtime_env(COG_PREDICTOR="predict.py:Predictor"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert '"x-order": 0' in result.stdout


def test_streaming_opt_in_is_read_statically() -> None:
    source = (FIXTURES / "echo" / "predict.py").read_text()
    assert static_predictor_info(source, "Streamer").streaming
    assert not static_predictor_info(source, "Predictor").streaming
