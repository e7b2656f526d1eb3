"""skiff-side helpers that run the runtime in a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES
from skiff.errors import BuildFailed
from skiff.runtime import predict_argv, read_openapi_schema, runtime_dir, runtime_env


def test_runtime_dir_is_importable_as_cog() -> None:
    assert (runtime_dir() / "cog" / "__init__.py").is_file()


def test_read_openapi_schema() -> None:
    schema = read_openapi_schema(FIXTURES / "kitchen", "predict.py:Predictor")
    assert schema["components"]["schemas"]["Input"]["required"] == ["prompt", "image", "api_key"]


def test_read_openapi_schema_failure_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(BuildFailed, match="No module named 'not_installed_anywhere'") as info:
        read_openapi_schema(tmp_path, "predict.py:Predictor")
    assert info.value.hint


def test_predict_argv_runs_the_local_runner(tmp_path: Path) -> None:
    model = FIXTURES / "echo"
    result = subprocess.run(
        predict_argv(["text=a b"], tmp_path),
        cwd=model,
        env=runtime_env(model),  # predictor from cog.yaml
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == ["a", "b"]
