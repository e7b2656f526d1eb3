"""Runs setup() and predictions: status, logs, metrics, outputs, cancelation.

Predictions run through an Executor (see executor.py: the main thread, or one thread
each). Shared by the HTTP server and the local ``predict`` command, so both behave alike.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import logcapture
from .exceptions import CancelationException
from .executor import Executor
from .files import FileError, OutputFiles
from .inputs import close_inputs, is_open_file, resolve_input
from .introspect import PredictorInfo, inspect_predictor
from .outputs import encode_output, iterate_output
from .prediction import Prediction, SetupResult, now_iso
from .predictor import PredictorRef, load_target, predict_method_name, train_method_name
from .scope import Scope, enter_scope
from .types import Path

EventHook = Callable[[str, "Prediction"], None]


class Busy(Exception):
    """Every prediction slot is taken (HTTP 409)."""


class NotReady(Exception):
    """setup() has not finished, or it failed (HTTP 503)."""


class Runner:
    """Owns the predictor instance; starts, tracks and cancels predictions."""

    def __init__(
        self,
        target: Any,
        info: PredictorInfo,
        *,
        max_concurrency: int = 1,
        files: OutputFiles | None = None,
        executor: Executor | None = None,
        share_with: Runner | None = None,
    ) -> None:
        self.target = target
        self.info = info
        self.max_concurrency = max(1, max_concurrency)
        self.files = files or OutputFiles()
        self.setup_result = SetupResult()
        self._instance: Any = None
        self._lock = threading.Lock()
        self._active: dict[str, Prediction] = {}
        self.executor = executor or Executor()
        if share_with is not None:
            # A trainer shares the predictor's slots: one budget, one id space, as in Cog.
            self._lock, self._active = share_with._lock, share_with._active
            self.executor, self.max_concurrency = share_with.executor, share_with.max_concurrency

    @classmethod
    def load(cls, ref: str, cwd: str, *, training: bool = False, **kwargs: Any) -> Runner:
        """Import the predictor (or trainer) and read its signature; setup() not run yet."""
        target = load_target(PredictorRef.parse(ref), cwd)
        method = train_method_name(target) if training else predict_method_name(target)
        return cls(target, inspect_predictor(target, method), **kwargs)

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

    def user_healthcheck(self, timeout: float = 5.0) -> str | None:
        """Run the predictor's own ``healthcheck()`` if it has one: None when healthy,
        else why not (False, an exception, or no answer within ``timeout``)."""
        check = getattr(self._instance, "healthcheck", None)
        if not callable(check):
            return None
        outcome: list[str | None] = []

        def run() -> None:
            try:
                outcome.append(None if check() is not False else "healthcheck() returned False")
            except Exception as e:
                outcome.append(f"healthcheck() raised {type(e).__name__}: {e}")

        thread = threading.Thread(target=run, name="user-healthcheck", daemon=True)
        thread.start()
        thread.join(timeout)
        return outcome[0] if outcome else f"healthcheck() did not answer within {timeout:g} s"

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
        emit = on_event or (lambda _e, _p: None)
        self.executor.submit(
            lambda: self._run(prediction, values, emit), name=f"prediction-{prediction.id}"
        )
        return prediction

    def cancel(self, prediction_id: str) -> bool:
        """Raise CancelationException in the prediction's thread; False if unknown."""
        with self._lock:
            p = self._active.get(prediction_id)
            if p is None:
                return False
            p.cancel_requested = True
            if p.in_predict and p.thread_id is not None:
                self.executor.interrupt(p.thread_id, CancelationException)
            return True

    def on_cancel_signal(self) -> None:
        """Signal handler (main thread): raise in the prediction running there, if any.

        Takes no lock: the interrupted code may hold it. The flags it reads are only
        changed by this same thread or under the lock before the signal is sent.
        """
        main = threading.main_thread().ident
        for p in list(self._active.values()):
            if p.thread_id == main and p.in_predict and p.cancel_requested:
                raise CancelationException()

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
            close_inputs(values)
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
            kwargs = {k: resolve_input(v, workdir) for k, v in values.items()}
            # Remember opened File inputs so the finally block can close them.
            values.update((k, v) for k, v in kwargs.items() if is_open_file(v))
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
                for item in iterate_output(result):
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
                        self.executor.clear_interrupt(p.thread_id)
                return late
            except CancelationException as e:
                late = e

    def _encode(self, value: Any, p: Prediction) -> Any:
        return encode_output(value, lambda f: self.files.encode(f, p.output_file_prefix))


def _weights() -> Any:
    """COG_WEIGHTS for setup(weights=...): a local Path, a URL string, or None."""
    value = os.environ.get("COG_WEIGHTS")
    if not value:
        return None
    return Path(value) if os.path.exists(value) else value
