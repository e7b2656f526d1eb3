"""Which predictor to serve: ``$COG_PREDICTOR``, else the ``predict:`` line of cog.yaml."""

from __future__ import annotations

import os
import re

_PREDICT_LINE = re.compile(r"^predict\s*:\s*(?P<value>.*?)\s*$")


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


def predictor_ref_from_yaml(text: str) -> str | None:
    """The top-level ``predict:`` value; a tiny reader so the image needs no YAML library."""
    for line in text.splitlines():
        match = _PREDICT_LINE.match(line)  # top-level keys start at column 0
        if match:
            value = _strip_yaml_scalar(match.group("value"))
            return value or None
    return None


def predictor_ref(cwd: str) -> str:
    env = os.environ.get("COG_PREDICTOR", "").strip()
    if env:
        return env
    path = os.path.join(cwd, "cog.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            ref = predictor_ref_from_yaml(f.read())
    except FileNotFoundError:
        raise ConfigError(f"no COG_PREDICTOR set and no cog.yaml in {cwd}") from None
    if ref is None:
        raise ConfigError("cog.yaml has no 'predict:' entry (expected 'predict.py:Predictor')")
    return ref
