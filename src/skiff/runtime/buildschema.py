"""The predictor's OpenAPI schema at build time (label, ``.cog/openapi_schema.json``).

Read from the predictor's source when it allows (no dependencies, no code run), else by
importing it in a subprocess with ``PYTHONPATH=<runtime_dir>:<model_dir>``. The generator
(``cog/static.py``, ``schema.py``, ``introspect.py`` beside this file) is skiff's own until
Cog-equal generation replaces it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from skiff.errors import BuildFailed

from .cog.config import ConfigError, predictor_ref, trainer_ref
from .cog.predictor import PredictorLoadError
from .cog.static import StaticSchemaError, static_openapi_schema

_SCHEMA_TIMEOUT_S = 300


def runtime_dir() -> Path:
    """The directory that contains ``cog/``: put it on PYTHONPATH to ``import cog``."""
    return Path(__file__).resolve().parent


def _schema_env(model_dir: Path, predictor: str | None) -> dict[str, str]:
    """skiff's schema generator (``cog`` beside this file) and the model importable."""
    env = dict(os.environ)
    paths = [str(runtime_dir()), str(model_dir)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if predictor is not None:
        env["COG_PREDICTOR"] = predictor
    return env


def read_openapi_schema(
    model_dir: Path, predictor: str | None = None, python: str = sys.executable
) -> dict[str, Any]:
    """The predictor's OpenAPI schema (label ``run.cog.openapi_schema``), by importing it.

    Importing needs the model's Python dependencies, so ``python`` should be the
    interpreter the model runs with.
    """
    try:
        result = subprocess.run(
            [python, "-m", "cog.command.openapi_schema"],
            cwd=model_dir,
            env=_schema_env(model_dir, predictor),
            capture_output=True,
            text=True,
            timeout=_SCHEMA_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildFailed(
            f"could not run the predictor to read its schema: {e}",
            hint="check that the Python interpreter exists and the predictor imports quickly",
        ) from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no error output"]
        raise BuildFailed(
            f"reading the predictor's schema failed: {detail[0]}",
            hint="fix the predictor so that `python -c 'import predict'` works in the model folder",
        )
    try:
        schema: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        raise BuildFailed("the schema command printed something that is not JSON") from None
    return schema


def schema_for_build(
    model_dir: Path, predictor: str | None = None, python: str = sys.executable
) -> dict[str, Any]:
    """The schema for the image label: read statically when the source allows it (no
    dependencies, no code run), else by importing the predictor with ``python``."""
    try:
        ref = predictor or predictor_ref(str(model_dir))
        return static_openapi_schema(ref, model_dir, trainer_ref(str(model_dir)))
    except (StaticSchemaError, PredictorLoadError):
        return read_openapi_schema(model_dir, predictor, python)
    except ConfigError as e:
        raise BuildFailed(str(e), hint="set `predict:` in cog.yaml") from None
