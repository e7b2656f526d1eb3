"""Per-prediction scope: custom metrics recorded by predictor code.

``cog.emit_metric``, ``cog.current_scope().record_metric`` and
``BasePredictor.record_metric`` all land in the running prediction's ``metrics``.
"""

from __future__ import annotations

import threading
from typing import Any

_scopes: dict[int, Scope] = {}
_lock = threading.Lock()


class Scope:
    def __init__(self, metrics: dict[str, Any] | None = None) -> None:
        self.metrics: dict[str, Any] = metrics if metrics is not None else {}

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        """``mode``: replace the value, ``incr`` add to it, or ``append`` to a list."""
        if mode == "incr":
            self.metrics[name] = self.metrics.get(name, 0) + value
        elif mode == "append":
            current = self.metrics.get(name)
            self.metrics[name] = [*current, value] if isinstance(current, list) else [value]
        elif mode == "replace":
            self.metrics[name] = value
        else:
            raise ValueError(f"unknown metric mode {mode!r}: use replace, incr or append")


def current_scope() -> Scope:
    """The running prediction's scope (a throwaway one outside a prediction)."""
    return _scopes.get(threading.get_ident()) or Scope()


def emit_metric(name: str, value: Any) -> None:
    current_scope().record_metric(name, value)


class enter_scope:
    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._ident = threading.get_ident()

    def __enter__(self) -> Scope:
        with _lock:
            _scopes[self._ident] = self._scope
        return self._scope

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _scopes.pop(self._ident, None)
