"""The names of Cog's SDK that skiff's build-time schema generator needs, standard library only.

Only ``skiff.runtime.buildschema`` imports it (as top-level ``cog``, to read a predictor's
schema by importing it where the source alone is not enough). Models run with Cog's own
``cog`` and ``coglet`` from PyPI, never with this.
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
