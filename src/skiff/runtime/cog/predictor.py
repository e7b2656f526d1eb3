"""BasePredictor/BaseRunner and loading a predictor from a ``file.py:Name`` reference."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from .scope import current_scope

STREAMING_FLAG = "__cog_streaming__"  # also read by introspect


class BasePredictor:
    """Subclass and implement setup() (once, optional) and predict() (per request)."""

    def setup(self) -> None:
        """Load weights and other slow state once, before any prediction."""

    def predict(self, **kwargs: Any) -> Any:
        raise NotImplementedError("predict has not been implemented by the predictor")

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        """Add a custom metric to the running prediction's ``metrics``."""
        current_scope().record_metric(name, value, mode)


class BaseRunner:
    """Newer Cog spelling: implement run() instead of predict()."""

    def setup(self) -> None:
        """Load weights and other slow state once, before any prediction."""

    def run(self, **kwargs: Any) -> Any:
        raise NotImplementedError("run has not been implemented by the runner")

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        """Add a custom metric to the running prediction's ``metrics``."""
        current_scope().record_metric(name, value, mode)


F = TypeVar("F", bound=Callable[..., Any])


def streaming(fn: F | None = None) -> Any:
    """Opt predict() in to server-sent events (``Accept: text/event-stream``), as in Cog.

    Usable as ``@streaming`` and ``@streaming()``.
    """

    def mark(f: F) -> F:
        setattr(f, STREAMING_FLAG, True)
        return f

    return mark if fn is None else mark(fn)


class PredictorLoadError(Exception):
    """The predictor reference cannot be resolved to a class or function."""


@dataclass(frozen=True)
class PredictorRef:
    """``predict.py:Predictor`` split into its file and attribute name."""

    path: str
    name: str

    @classmethod
    def parse(cls, ref: str) -> PredictorRef:
        path, sep, name = ref.strip().rpartition(":")
        if not sep or not path or not name.isidentifier():
            raise PredictorLoadError(
                f"invalid predictor reference {ref!r}: expected 'file.py:ClassName'"
            )
        return cls(path=path, name=name)

    def __str__(self) -> str:
        return f"{self.path}:{self.name}"


def load_module(ref: PredictorRef, cwd: str) -> ModuleType:
    """Import the predictor's file as a top-level module, with cwd importable (as Cog does)."""
    file = os.path.join(cwd, ref.path)
    if not os.path.isfile(file):
        raise PredictorLoadError(f"predictor file not found: {ref.path}")
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name = os.path.splitext(os.path.basename(ref.path))[0]
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == file:
        return loaded  # predictor and trainer in one file: one module, as Python would
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PredictorLoadError(f"cannot import {ref.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_target(ref: PredictorRef, cwd: str) -> Any:
    """The class or function the reference names (not instantiated, setup not run)."""
    module = load_module(ref, cwd)
    target = getattr(module, ref.name, None)
    if target is None:
        raise PredictorLoadError(f"{ref.name} not found in {ref.path}")
    if not (inspect.isclass(target) or inspect.isfunction(target)):
        raise PredictorLoadError(f"{ref} is neither a class nor a function")
    return target


def train_method_name(target: Any) -> str:
    """Which method serves trainings: ``train`` on a class, else the function itself."""
    if inspect.isclass(target):
        if not hasattr(target, "train"):
            raise PredictorLoadError(f"{target.__name__} has no train() method")
        return "train"
    return str(target.__name__)


def predict_method_name(target: Any) -> str:
    """Which method serves predictions: ``run`` for runners, ``predict`` otherwise."""
    if inspect.isclass(target):
        if issubclass(target, BaseRunner) or (
            hasattr(target, "run") and not hasattr(target, "predict")
        ):
            return "run"
        if not hasattr(target, "predict"):
            raise PredictorLoadError(f"{target.__name__} has no predict() method")
        return "predict"
    return str(target.__name__)
