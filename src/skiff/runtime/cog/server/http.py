"""``python -m cog.server.http``: Cog's prediction HTTP API on the standard library.

The socket is listening before the predictor is even imported (health-check says
STARTING), so the container is reachable at once while setup() loads weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import __version__, logcapture
from ..config import predictor_ref, trainer_ref
from ..executor import Executor, MainThreadExecutor
from ..files import OutputFiles
from ..prediction import Prediction, SetupResult, mask_secrets, new_prediction_id, now_iso
from ..runner import Busy, NotReady, Runner
from ..schema import build_schema
from ..validation import InputError, validate_inputs
from .sse import EventStream
from .webhook import EVENTS, WebhookSender

_PREDICTION = re.compile(r"^/(?P<kind>predictions|trainings)/(?P<id>[^/]+)$")
_CANCEL = re.compile(r"^/(?:predictions|trainings)/(?P<id>[^/]+)/cancel$")


class App:
    """Server state: the runner once loaded, and how setup went."""

    def __init__(
        self,
        ref: str,
        cwd: str,
        *,
        max_concurrency: int = 1,
        upload_url: str | None = None,
        trainer_ref: str | None = None,
    ) -> None:
        self.ref = ref
        self.trainer_ref = trainer_ref
        self.trainer: Runner | None = None
        self.cwd = cwd
        self.max_concurrency = max_concurrency
        self.files = OutputFiles(upload_url)
        self.setup_result = SetupResult()
        self.runner: Runner | None = None
        self.schema: dict[str, Any] | None = None
        self.streams: dict[str, EventStream] = {}  # by prediction id, while running
        self.executor: Executor = Executor()
        if max_concurrency == 1 and MainThreadExecutor.supported():
            self.executor = MainThreadExecutor(on_signal=self.on_cancel_signal)

    def boot(self) -> None:
        """Import the predictor, build its schema, run setup(): in the background."""
        result = self.setup_result
        result.started_at = now_iso()
        with logcapture.capture(result.logs.append):
            try:
                runner = Runner.load(
                    self.ref,
                    self.cwd,
                    max_concurrency=self.max_concurrency,
                    files=self.files,
                    executor=self.executor,
                )
                trainer = None
                if self.trainer_ref is not None:
                    trainer = Runner.load(
                        self.trainer_ref,
                        self.cwd,
                        training=True,
                        files=self.files,
                        share_with=runner,
                    )
                self.schema = build_schema(runner.info, trainer.info if trainer else None)
            except BaseException:
                result.logs.append(traceback.format_exc())
                result.status = "failed"
                result.completed_at = now_iso()
                return
        runner.setup_result = result
        self.runner = runner
        if runner.setup() and trainer is not None:
            trainer.setup_result = result  # one setup report, as Cog's health-check has
            trainer.setup()
            self.trainer = trainer

    def on_cancel_signal(self) -> None:
        if self.runner is not None:
            self.runner.on_cancel_signal()

    def health(self) -> str:
        if self.runner is not None:
            return self.runner.health()
        return "SETUP_FAILED" if self.setup_result.status == "failed" else "STARTING"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cog-skiff/" + __version__
    app: App  # set on a subclass by serve()

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the blank line after the last chunk
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_json(self) -> tuple[Any, list[InputError]]:
        raw = self._read_body()
        if not raw.strip():
            return {}, []
        try:
            return json.loads(raw), []
        except ValueError as e:
            return None, [
                InputError(("body", 0), f"JSON decode error: {e}", "value_error.jsondecode")
            ]

    def log_message(self, format: str, *args: Any) -> None:
        if not self.path.startswith("/health-check"):
            super().log_message(format, *args)

    def _guarded(self, route: Callable[[], None]) -> None:
        """A bug in a route answers 500 instead of dropping the connection."""
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception:
            traceback.print_exc()
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": "internal server error"})

    def _send_stream(self, stream: EventStream | None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the end of the body ends the stream
        self.end_headers()
        self.close_connection = True
        if stream is None:
            return
        for chunk in stream.read():
            self.wfile.write(chunk)
            self.wfile.flush()

    def _route_path(self) -> str:
        """The path without query, and without a trailing slash (FastAPI redirects those)."""
        path = self.path.split("?", 1)[0]
        return path.rstrip("/") or "/"

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._guarded(self._route_get)

    def _route_get(self) -> None:
        path = self._route_path()
        if path == "/":
            self._send(HTTPStatus.OK, _index(self.app.trainer_ref is not None))
        elif path == "/health-check":
            body: dict[str, Any] = {
                "status": self.app.health(),
                "setup": self.app.setup_result.to_json(),
                "version": {"cog": __version__, "python": platform.python_version()},
            }
            if body["status"] == "READY" and self.app.runner is not None:
                problem = self.app.runner.user_healthcheck()
                if problem is not None:
                    body["status"] = "UNHEALTHY"
                    body["user_healthcheck_error"] = problem
            self._send(HTTPStatus.OK, body)
        elif path == "/openapi.json":
            if self.app.schema is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"detail": "predictor not loaded"})
            else:
                self._send(HTTPStatus.OK, self.app.schema)
        else:
            self._not_found()

    def do_POST(self) -> None:
        self._guarded(self._route_post)

    def _route_post(self) -> None:
        path = self._route_path()
        if path in ("/predictions", "/trainings"):
            self._predict(None, training=path == "/trainings")
        elif match := _CANCEL.match(path):
            self._cancel(urllib.parse.unquote(match.group("id")))
        elif path == "/shutdown":
            self._send(HTTPStatus.OK, {})
            self.app.executor.stop()  # main() then stops the HTTP server
        else:
            self._not_found()

    def do_PUT(self) -> None:
        self._guarded(self._route_put)

    def _route_put(self) -> None:
        match = _PREDICTION.match(self._route_path())
        if match:
            training = match.group("kind") == "trainings"
            self._predict(urllib.parse.unquote(match.group("id")), training=training)
        else:
            self._not_found()

    def _cancel(self, prediction_id: str) -> None:
        self._read_json()  # drain any body so the connection stays usable
        runner = self.app.runner
        if runner is None or not runner.cancel(prediction_id):
            self._not_found()
        else:
            self._send(HTTPStatus.OK, {})

    def _predict(self, path_id: str | None, training: bool = False) -> None:
        if training and self.app.trainer_ref is None:
            self._read_json()
            self._not_found()  # Cog serves /trainings only for models with train:
            return
        body, errors = self._read_json()
        if not errors and not isinstance(body, dict):
            errors = [InputError(("body",), "value is not a valid dict", "type_error.dict")]
        if errors:
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"detail": [e.to_json() for e in errors]})
            return
        runner = self.app.trainer if training else self.app.runner
        if runner is None or runner.setup_result.status != "succeeded":
            self._send(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"detail": f"Server is not ready (status {self.app.health()})"},
            )
            return
        errors = _request_errors(body, path_id)
        values, input_errors = validate_inputs(runner.info.inputs, body.get("input"))
        errors += input_errors
        if errors:
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"detail": [e.to_json() for e in errors]})
            return
        webhook = body.get("webhook") or None
        prediction = Prediction(
            id=path_id or str(body.get("id") or "") or new_prediction_id(),
            input=mask_secrets(runner.info, body.get("input") or {}),
            created_at=body.get("created_at") or now_iso(),
            version=body.get("version"),
            webhook=webhook,
            output_file_prefix=body.get("output_file_prefix"),
        )
        wants_stream = "text/event-stream" in (self.headers.get("Accept") or "")
        if wants_stream and not runner.info.streaming:
            self._send(
                HTTPStatus.NOT_ACCEPTABLE,
                {"detail": "this model does not stream: decorate predict() with @cog.streaming"},
            )
            return
        sender = None
        if webhook:
            events = body.get("webhook_events_filter")
            sender = WebhookSender(webhook, frozenset(EVENTS if events is None else events))
        stream = EventStream(runner.info.output.streams) if runner.info.streaming else None

        def on_event(event: str, p: Prediction) -> None:
            if sender is not None:
                sender.notify(event, p.to_json())
            if stream is not None:
                stream.on_event(event, p)
                if event == "completed":
                    self.app.streams.pop(p.id, None)

        # Cog answers an async request with the prediction as it was accepted: "starting".
        accepted = prediction.to_json()
        if stream is not None:
            self.app.streams.setdefault(prediction.id, stream)
        try:
            started = runner.start(prediction, values, on_event)
        except Busy as e:
            self._send(HTTPStatus.CONFLICT, {"detail": str(e)})
            return
        except NotReady as e:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"detail": f"Server is not ready ({e})"})
            return
        if wants_stream:
            # A retry of a running prediction replays that prediction's stream.
            self._send_stream(self.app.streams.get(started.id) or stream)
            return
        if "respond-async" in (self.headers.get("Prefer") or ""):
            # A retry of a running prediction gets that prediction, as it is now.
            self._send(
                HTTPStatus.ACCEPTED, accepted if started is prediction else started.to_json()
            )
            return
        started.done.wait()  # a synchronous retry waits for the running prediction
        self._send(HTTPStatus.OK, started.to_json())


def _request_errors(body: dict[str, Any], path_id: str | None) -> list[InputError]:
    errors = []
    if path_id is not None and body.get("id") is not None and str(body["id"]) != path_id:
        errors.append(
            InputError(
                ("body", "id"), "prediction ID must match the ID supplied in the URL", "value_error"
            )
        )
    events = body.get("webhook_events_filter")
    if events is not None and (
        not isinstance(events, list) or any(e not in EVENTS for e in events)
    ):
        permitted = ", ".join(repr(e) for e in EVENTS)
        errors.append(
            InputError(
                ("body", "webhook_events_filter"),
                f"value is not a valid enumeration member; permitted: {permitted}",
                "type_error.enum",
            )
        )
    webhook = body.get("webhook")
    if webhook is not None and not (
        isinstance(webhook, str) and webhook.startswith(("http://", "https://"))
    ):
        errors.append(
            InputError(
                ("body", "webhook"), "invalid or missing URL scheme", "value_error.url.scheme"
            )
        )
    return errors


def _index(training: bool) -> dict[str, Any]:
    urls = {
        "cog_version": __version__,
        "docs_url": "/docs",
        "openapi_url": "/openapi.json",
        "shutdown_url": "/shutdown",
        "healthcheck_url": "/health-check",
        "predictions_url": "/predictions",
        "predictions_idempotent_url": "/predictions/{prediction_id}",
        "predictions_cancel_url": "/predictions/{prediction_id}/cancel",
    }
    if training:
        urls["trainings_url"] = "/trainings"
        urls["trainings_idempotent_url"] = "/trainings/{training_id}"
        urls["trainings_cancel_url"] = "/trainings/{training_id}/cancel"
    return urls


def serve(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """Bind the server (listening at return); the caller runs serve_forever()."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cog.server.http")
    parser.add_argument("--host", default=os.environ.get("COG_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--upload-url", default=os.environ.get("COG_UPLOAD_URL") or None)
    parser.add_argument(
        "--max-concurrency", type=int, default=int(os.environ.get("COG_MAX_CONCURRENCY", "1"))
    )
    parser.add_argument(
        "--await-explicit-shutdown",
        action="store_true",
        help="ignore SIGTERM: stop only on POST /shutdown (as Cog)",
    )
    # Other Cog flags (--x-mode, --threads, ...) must not stop the server from starting.
    args, ignored = parser.parse_known_args(argv)
    if ignored:
        print(f"ignoring unsupported arguments: {' '.join(ignored)}", file=sys.stderr)
    cwd = os.getcwd()
    logcapture.install()
    try:
        ref = predictor_ref(cwd)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    app = App(
        ref,
        cwd,
        max_concurrency=args.max_concurrency,
        upload_url=args.upload_url,
        trainer_ref=trainer_ref(cwd),
    )
    server = serve(app, args.host, args.port)
    executor = app.executor
    if isinstance(executor, MainThreadExecutor):
        executor.install()
    if args.await_explicit_shutdown:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: executor.stop())
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    ).start()
    # Import and setup() run where predictions will (the main thread when possible, as in
    # Cog's worker), so predictor code that needs the main thread (signals) works there.
    executor.submit(app.boot, name="cog-setup")
    print(f"serving on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        # The main thread runs predictions (so a cancel signal can interrupt them) or waits.
        executor.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
