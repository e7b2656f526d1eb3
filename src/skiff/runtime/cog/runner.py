"""Runs setup() and predictions in threads: status, logs, outputs, cancelation.

Shared by the HTTP server and the local ``predict`` command, so both behave alike.
"""

from __future__ import annotations

import inspect
import io
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import logcapture
from .exceptions import CancelationException
from .files import FileError, OutputFiles, fetch, is_file_output
from .introspect import PredictorInfo, Primitive, inspect_predictor
from .model import BaseModel
from .predictor import PredictorRef, load_target, predict_method_name
from .scope import Scope, enter_scope
from .types import Path, Secret
from .validation import FileRef

EventHook = Callable[[str, "Prediction"], None]
_MASK = "**********"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()  # noqa: UP017 - runs on Python < 3.11 too


class Busy(Exception):
    """Every prediction slot is taken (HTTP 409)."""


class NotReady(Exception):
    """setup() has not finished, or it failed (HTTP 503)."""


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


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    import ctypes  # deferred, like asyncio below: the server must start listening fast

    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)


class Runner:
    """Owns the predictor instance; starts, tracks and cancels predictions."""

    def __init__(
        self,
        target: Any,
        info: PredictorInfo,
        *,
        max_concurrency: int = 1,
        files: OutputFiles | None = None,
    ) -> None:
        self.target = target
        self.info = info
        self.max_concurrency = max(1, max_concurrency)
        self.files = files or OutputFiles()
        self.setup_result = SetupResult()
        self._instance: Any = None
        self._lock = threading.Lock()
        self._active: dict[str, Prediction] = {}

    @classmethod
    def load(cls, ref: str, cwd: str, **kwargs: Any) -> Runner:
        """Import the predictor and read its signature (setup() not run yet)."""
        target = load_target(PredictorRef.parse(ref), cwd)
        info = inspect_predictor(target, predict_method_name(target))
        return cls(target, info, **kwargs)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> bool:
        """Instantiate the predictor and run setup(), capturing its logs."""
        result = self.setup_result
        result.started_at = result.started_at or now_iso()
        with logcapture.capture(result.logs.append):
            try:
                if inspect.isclass(self.target):
                    instance = self.target()
                    if hasattr(instance, "setup"):
                        if self.info.accepts_weights:
                            instance.setup(weights=_weights())
                        else:
                            instance.setup()
                    self._instance = instance
                else:
                    self._instance = None
                result.status = "succeeded"
            except BaseException:
                result.logs.append(traceback.format_exc())
                result.status = "failed"
        result.completed_at = now_iso()
        return result.status == "succeeded"

    # -- state ---------------------------------------------------------------------------------

    def health(self) -> str:
        if self.setup_result.status == "starting":
            return "STARTING"
        if self.setup_result.status == "failed":
            return "SETUP_FAILED"
        with self._lock:
            return "BUSY" if len(self._active) >= self.max_concurrency else "READY"

    def get(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self._active.get(prediction_id)

    # -- predictions ---------------------------------------------------------------------------

    def start(
        self,
        prediction: Prediction,
        values: dict[str, Any],
        on_event: EventHook | None = None,
    ) -> Prediction:
        """Run a validated prediction in its own thread; returns the tracked Prediction.

        Starting an id that is already running returns the running one (idempotent PUT).
        """
        if self.setup_result.status != "succeeded":
            raise NotReady(self.health())
        with self._lock:
            running = self._active.get(prediction.id)
            if running is not None:
                return running
            if len(self._active) >= self.max_concurrency:
                raise Busy("Already running a prediction")
            self._active[prediction.id] = prediction
        thread = threading.Thread(
            target=self._run,
            args=(prediction, values, on_event or (lambda _e, _p: None)),
            name=f"prediction-{prediction.id}",
            daemon=True,
        )
        thread.start()
        return prediction

    def cancel(self, prediction_id: str) -> bool:
        """Raise CancelationException in the prediction's thread; False if unknown."""
        with self._lock:
            p = self._active.get(prediction_id)
            if p is None:
                return False
            p.cancel_requested = True
            if p.in_predict and p.thread_id is not None:
                _set_async_exc(p.thread_id, CancelationException)
            return True

    def _run(self, p: Prediction, values: dict[str, Any], emit: EventHook) -> None:
        p.thread_id = threading.get_ident()
        workdir = tempfile.mkdtemp(prefix="cog-input-")
        outcome: BaseException | None = None

        def on_log(text: str) -> None:
            p.logs.append(text)
            emit("logs", p)

        try:
            p.started_at = now_iso()
            emit("start", p)  # Cog's start webhook still says "starting"
            p.status = "processing"
            started = time.monotonic()
            with logcapture.capture(on_log), enter_scope(Scope(p.metrics)):
                try:
                    outcome = self._call(p, values, workdir, emit)
                finally:
                    outcome = self._leave_predict(p) or outcome
            p.predict_time = time.monotonic() - started
            if isinstance(outcome, CancelationException):
                p.status = "canceled"
            elif outcome is not None:
                p.status = "failed"
                p.error = str(outcome) or type(outcome).__name__
                if not isinstance(outcome, FileError):
                    p.logs.append(
                        "".join(
                            traceback.format_exception(
                                type(outcome), outcome, outcome.__traceback__
                            )
                        )
                    )
            else:
                p.status = "succeeded"
        except BaseException as e:
            p.status = "failed"
            p.error = f"internal error: {e}"
        finally:
            _close_inputs(values)
            shutil.rmtree(workdir, ignore_errors=True)
            p.completed_at = now_iso()
            with self._lock:
                self._active.pop(p.id, None)
            emit("completed", p)
            p.done.set()

    def _call(
        self, p: Prediction, values: dict[str, Any], workdir: str, emit: EventHook
    ) -> BaseException | None:
        """Fetch input files and run user code; returns the exception raised (or None)."""
        try:
            kwargs = {k: _resolve(v, workdir) for k, v in values.items()}
            # Remember opened File inputs so the finally block can close them.
            values.update((k, v) for k, v in kwargs.items() if _is_open_file(v))
            with self._lock:
                if p.cancel_requested:
                    raise CancelationException()
                p.in_predict = True
            if self._instance is not None:
                fn = getattr(self._instance, self.info.method)
            else:
                fn = self.target  # a plain predict function
            result = fn(**kwargs)
            if inspect.iscoroutine(result):
                import asyncio

                result = asyncio.run(result)
            if (
                self.info.output.streams
                or inspect.isgenerator(result)
                or inspect.isasyncgen(result)
            ):
                p.output = []
                for item in _iterate(result):
                    p.output.append(self._encode(item, p))
                    emit("output", p)
            else:
                p.output = self._encode(result, p)
                emit("output", p)
            return None
        except BaseException as e:
            return e

    def _leave_predict(self, p: Prediction) -> BaseException | None:
        """Close the cancel window; an exception delivered meanwhile still counts as cancel."""
        late: BaseException | None = None
        while True:
            try:
                with self._lock:
                    p.in_predict = False
                    if p.thread_id is not None:
                        _set_async_exc(p.thread_id, None)
                return late
            except CancelationException as e:
                late = e

    def _encode(self, value: Any, p: Prediction) -> Any:
        return encode_output(value, lambda f: self.files.encode(f, p.output_file_prefix))


def _iterate(result: Any) -> Iterator[Any]:
    if isinstance(result, AsyncIterator):
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(result.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()
    elif isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict)):
        yield from result
    else:
        yield result


def encode_output(value: Any, encode_file: Callable[[Any], str]) -> Any:
    """Make an output JSON-ready: files become URLs, models become objects."""
    if is_file_output(value):
        return encode_file(value)
    if isinstance(value, BaseModel):
        return {k: encode_output(v, encode_file) for k, v in value.dict().items()}
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {str(k): encode_output(v, encode_file) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [encode_output(v, encode_file) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {
            k: encode_output(getattr(value, k), encode_file) for k in value.__dataclass_fields__
        }
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # Enum
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return encode_output(value.tolist(), encode_file)
    raise TypeError(f"output of type {type(value).__name__} cannot be encoded as JSON")


def _resolve(value: Any, workdir: str) -> Any:
    if isinstance(value, FileRef):
        path = fetch(value.location, workdir)
        return open(path, "rb") if value.opened else path
    if isinstance(value, list):
        return [_resolve(v, workdir) for v in value]
    return value


def _is_open_file(value: Any) -> bool:
    return isinstance(value, io.IOBase) or (
        isinstance(value, list) and any(isinstance(v, io.IOBase) for v in value)
    )


def _close_inputs(values: dict[str, Any]) -> None:
    """Close File inputs the runtime opened, before their temp files are removed."""
    for value in values.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, io.IOBase):
                item.close()


def _weights() -> Any:
    """COG_WEIGHTS for setup(weights=...): a local Path, a URL string, or None."""
    value = os.environ.get("COG_WEIGHTS")
    if not value:
        return None
    return Path(value) if os.path.exists(value) else value


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
