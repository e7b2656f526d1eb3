"""The state of setup and of each prediction, in Cog's response shapes."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .introspect import PredictorInfo, Primitive

_MASK = "**********"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()  # noqa: UP017 - runs on Python < 3.11 too


@dataclass
class SetupResult:
    status: str = "starting"  # starting | succeeded | failed
    started_at: str | None = None
    completed_at: str | None = None
    logs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "logs": "".join(self.logs),
            "status": self.status,
        }


@dataclass
class Prediction:
    """One prediction's state; ``to_json`` is Cog's PredictionResponse."""

    id: str
    input: dict[str, Any]
    created_at: str
    version: str | None = None
    webhook: str | None = None
    output_file_prefix: str | None = None
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: list[str] = field(default_factory=list)
    started_at: str | None = None
    completed_at: str | None = None
    predict_time: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # custom, from the predictor
    done: threading.Event = field(default_factory=threading.Event)
    cancel_requested: bool = False
    # Guarded by Runner._lock: True only while user code runs, so a cancel never lands
    # in the runtime's own bookkeeping.
    in_predict: bool = False
    thread_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        output = self.output
        if isinstance(output, list):
            output = list(output)
        body: dict[str, Any] = {
            "id": self.id,
            "input": self.input,
            "output": output,
            "error": self.error,
            "logs": "".join(self.logs),
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "metrics": self._metrics(),
        }
        if self.version is not None:
            body["version"] = self.version
        if self.webhook is not None:
            body["webhook"] = self.webhook
        return body

    def _metrics(self) -> dict[str, Any]:
        metrics = dict(self.metrics)
        if self.predict_time is not None:
            metrics["predict_time"] = self.predict_time
        return metrics


def mask_secrets(info: PredictorInfo, raw: Any) -> Any:
    """The request's input as echoed in responses and webhooks: Secret values masked."""
    if not isinstance(raw, dict):
        return raw
    masked = dict(raw)
    for name, spec in info.inputs.items():
        value = masked.get(name)
        if spec.type.primitive is Primitive.SECRET and value is not None:
            masked[name] = [_MASK] * len(value) if isinstance(value, list) else _MASK
    return masked


def new_prediction_id() -> str:
    return uuid.uuid4().hex
