"""The OpenAPI schema Cog 0.23 writes for a predictor, read from its source without importing it.

coglet (Cog's server, installed in every skiff image) validates inputs against
``/src/.cog/openapi_schema.json`` and serves it as ``/openapi.json``; ``cog build`` writes that file
from a static reading of the predictor. This package reproduces that reading rule by rule, so a
skiff image answers exactly as a ``cog build`` image does:

    generate(folder, "predict.py:Predictor")            -> the schema as a dict (Cog's key order)
    render(folder, "predict.py:Predictor", "train.py:train") -> the exact bytes Cog writes
    decorator_concurrency(folder, "predict.py:Predictor")    -> N of @cog.concurrent(max=N), or None

A predictor Cog cannot read raises UnsupportedPredictor (an InvalidInput: exit 2) naming the
file, the line and what cannot be read there.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from skiff.cogschema import openapi
from skiff.cogschema.errors import UnsupportedPredictor
from skiff.cogschema.gojson import dumps
from skiff.cogschema.parser import read_concurrency, read_predictor

__all__ = [
    "COG_VERSION",
    "UnsupportedPredictor",
    "decorator_concurrency",
    "dumps",
    "generate",
    "render",
]

# The Cog release whose generator this package follows; Cog writes its own version in info.version.
COG_VERSION = "0.23.1"


def _split_ref(ref: str) -> tuple[str, str]:
    path, sep, name = ref.partition(":")
    if not sep or not path or not name:
        raise UnsupportedPredictor(
            f"invalid predictor reference '{ref}': expected file.py:ClassName or "
            "file.py:function_name"
        )
    clean = posixpath.normpath(path.replace("\\", "/"))
    if clean.startswith("/") or clean == ".." or clean.startswith("../"):
        raise UnsupportedPredictor(f"predictor source path '{path}' is outside the model folder")
    return clean, name


def _read(folder: Path, ref: str, train: bool, version: str) -> dict[str, Any]:
    rel, name = _split_ref(ref)
    if not (folder / rel).is_file():
        raise UnsupportedPredictor(
            f"predictor source {rel} (from '{ref}') does not exist in {folder}"
        )
    return openapi.build(read_predictor(folder, rel, name, train), version)


def generate(
    folder: Path,
    predict_ref: str | None,
    train_ref: str | None = None,
    *,
    version: str = COG_VERSION,
) -> dict[str, Any]:
    """The schema Cog writes for this model, as a dict whose key order is Cog's byte order.

    ``version`` is written as ``info.version`` (Cog writes its own version there; an image's
    schema should name the SDK it carries). With both refs, the prediction and training documents
    are merged as Cog merges them.
    """
    folder = Path(folder)
    if not predict_ref and not train_ref:
        raise UnsupportedPredictor("no predict or train reference given")
    if not train_ref:
        return _read(folder, str(predict_ref), False, version)
    if not predict_ref:
        return _read(folder, train_ref, True, version)
    return openapi.merge(
        _read(folder, predict_ref, False, version), _read(folder, train_ref, True, version)
    )


def render(
    folder: Path,
    predict_ref: str | None,
    train_ref: str | None = None,
    *,
    version: str = COG_VERSION,
) -> bytes:
    """The bytes of ``.cog/openapi_schema.json`` (and the ``run.cog.openapi_schema`` label) as Cog
    writes them: compact for one mode, two-space indented when run and train are merged."""
    schema = generate(folder, predict_ref, train_ref, version=version)
    indent = 2 if predict_ref and train_ref else None
    return dumps(schema, indent=indent).encode("utf-8")


def decorator_concurrency(
    folder: Path, predict_ref: str | None, train_ref: str | None = None
) -> int | None:
    """N from ``@cog.concurrent(max=N)`` on the run/predict callable (bare ``@concurrent`` is 1).

    Cog reads it statically from the predict target (the train target when there is none) and
    uses it for COG_MAX_CONCURRENCY when cog.yaml has no ``concurrency:``. max > 1 on a
    synchronous method is refused, as Cog refuses it.
    """
    ref = predict_ref or train_ref
    if not ref:
        return None
    rel, name = _split_ref(ref)
    folder = Path(folder)
    if not (folder / rel).is_file():
        raise UnsupportedPredictor(
            f"predictor source {rel} (from '{ref}') does not exist in {folder}"
        )
    n, _ = read_concurrency(folder, rel, name, train=not predict_ref)
    return n
