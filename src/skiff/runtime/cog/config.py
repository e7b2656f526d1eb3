"""Which predictor (and trainer) to serve: ``$COG_PREDICTOR``/``$COG_TRAINER``, else the
``predict:``/``train:`` lines of cog.yaml."""

from __future__ import annotations

import os
import re

_TOP_LEVEL = re.compile(r"^(?P<key>predict|train)\s*:\s*(?P<value>.*?)\s*$")


class ConfigError(Exception):
    """No predictor reference could be found."""


def _strip_yaml_scalar(raw: str) -> str:
    value = raw.strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        return value[1:end] if end > 0 else value[1:]
    # An unquoted scalar ends at a comment.
    return value.split(" #", 1)[0].strip()


def ref_from_yaml(text: str, key: str = "predict") -> str | None:
    """A top-level ``predict:``/``train:`` value; a tiny reader so the image needs no YAML
    library (top-level keys start at column 0)."""
    for line in text.splitlines():
        match = _TOP_LEVEL.match(line)
        if match and match.group("key") == key:
            value = _strip_yaml_scalar(match.group("value"))
            return value or None
    return None


def predictor_ref_from_yaml(text: str) -> str | None:
    return ref_from_yaml(text, "predict")


def _read_yaml(cwd: str) -> str | None:
    try:
        with open(os.path.join(cwd, "cog.yaml"), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def trainer_ref(cwd: str) -> str | None:
    """``$COG_TRAINER``, else cog.yaml's ``train:``; None when the model does not train."""
    env = os.environ.get("COG_TRAINER", "").strip()
    if env:
        return env
    text = _read_yaml(cwd)
    return ref_from_yaml(text, "train") if text is not None else None


def predictor_ref(cwd: str) -> str:
    env = os.environ.get("COG_PREDICTOR", "").strip()
    if env:
        return env
    text = _read_yaml(cwd)
    if text is None:
        raise ConfigError(f"no COG_PREDICTOR set and no cog.yaml in {cwd}")
    ref = ref_from_yaml(text, "predict")
    if ref is None:
        raise ConfigError("cog.yaml has no 'predict:' entry (expected 'predict.py:Predictor')")
    return ref
