"""Running a model on this machine with skiff's Cog runtime: ``skiff predict`` and ``skiff serve``.

The model runs in a child Python (this one) with the runtime's ``cog`` package and the model folder
on its path — the same code that serves inside the image — so the model's own imports must be
installed here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from skiff import config as cogconfig
from skiff import runtime

STARTER_COG_YAML = """\
# Configuration for skiff (and Cog): https://cog.run/yaml
build:
  python_version: "3.11"
  # python_packages:
  #   - "numpy==2.1.3"
predict: "predict.py:Predictor"
# image: "registry.example.com/you/model"
"""

STARTER_PREDICT = '''\
"""Your model's predictor, written for Cog's API: https://cog.run/python"""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        """Load the model into memory once, so that predictions are fast."""

    def predict(self, text: str = Input(description="Text to echo")) -> str:
        """Run a single prediction on the model."""
        return text
'''


def predict(folder: Path, inputs: Sequence[str], output_dir: Path) -> int:
    """One prediction, printed as Cog's JSON response; returns the runner's exit status."""
    cfg = cogconfig.load(folder)
    cogconfig.check_local(cfg)
    argv = runtime.predict_argv(inputs, output_dir.resolve())
    return subprocess.call(argv, cwd=folder, env=runtime.runtime_env(folder.resolve(), cfg.predict))


def serve(folder: Path, port: int, host: str = "127.0.0.1") -> int:
    """Cog's HTTP API on ``host:port`` until interrupted."""
    cfg = cogconfig.load(folder)
    cogconfig.check_local(cfg)
    env = runtime.runtime_env(folder.resolve(), cfg.predict)
    env["PORT"] = str(port)
    return subprocess.call(runtime.serve_argv(port, host), cwd=folder, env=env)


def init(folder: Path) -> list[Path]:
    """Write a starter cog.yaml and predict.py; never overwrites a file."""
    from skiff.errors import InvalidInput

    targets = {folder / "cog.yaml": STARTER_COG_YAML, folder / "predict.py": STARTER_PREDICT}
    existing = [p for p in targets if p.exists()]
    if existing:
        names = ", ".join(p.name for p in existing)
        raise InvalidInput(f"{names} already exist in {folder}", "skiff init never overwrites")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        path.write_text(text)
    return list(targets)
