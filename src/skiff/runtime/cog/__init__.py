"""Cog-compatible predictor SDK, standard library only (installed by skiff in every image).

``from cog import BasePredictor, Input, Path`` works as with Cog itself.
"""

from .exceptions import CancelationException
from .model import BaseModel
from .predictor import BasePredictor, BaseRunner, streaming
from .scope import current_scope, emit_metric
from .types import AsyncConcatenateIterator, ConcatenateIterator, File, Input, Path, Secret

__version__ = "0.1.0+skiff"

__all__ = [
    "AsyncConcatenateIterator",
    "BaseModel",
    "BasePredictor",
    "BaseRunner",
    "CancelationException",
    "ConcatenateIterator",
    "File",
    "Input",
    "Path",
    "Secret",
    "__version__",
    "current_scope",
    "emit_metric",
    "streaming",
]
