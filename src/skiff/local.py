"""Running a model on this machine with Cog's own runtime: ``skiff predict`` and ``skiff serve``.

A model folder runs in a cached uv environment with its packages and Cog's ``cog``/``coglet``
(``runtime.venv``), in a working folder that mirrors it (``runtime.srcdir``); an image runs
under bubblewrap (``runtime.image``). Either way the server is Cog's (``python -m
cog.server.http``), started and stopped as one process group (``runtime.process``), and
``skiff predict`` is a client of it that prints what ``cog predict`` prints (``runtime.cli_io``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from skiff import cogschema
from skiff import config as cogconfig
from skiff.errors import InvalidInput, SkiffError
from skiff.runtime import cli_io
from skiff.runtime.process import Server, Stopped, check_port, free_port, stop_on_signals

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


@dataclass
class _Plan:
    """What to start: the server's command, environment and folder, and the schema if known."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    schema: dict[str, Any] | None
    cleanup: Path | None = None


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _folder_plan(folder: Path, port: int, host: str) -> _Plan:
    from skiff.image.layout import cache_dir
    from skiff.runtime.srcdir import make_srcdir
    from skiff.runtime.venv import ensure_env

    cfg = cogconfig.load(folder)
    cogconfig.predictor_ref(cfg)  # the predictor file exists (exit 2 with the field if not)
    cache = cache_dir()
    run_env = ensure_env(cfg, cache, lambda text: _say(f"warning: {text}"), _say)
    schema, concurrency = _model_schema(cfg, run_env.sdk_version)
    work = make_srcdir(cfg.root, schema, cache)
    env = dict(os.environ)
    env.update(cfg.environment_vars)
    env.pop("PYTHONHOME", None)
    # coglet starts its worker as a bare `python`: it must be this environment's.
    env["PATH"] = os.pathsep.join([str(run_env.bin), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(run_env.root)
    env["PYTHONUNBUFFERED"] = "1"
    env["PORT"] = str(port)
    env["COG_PREDICT_TYPE_STUB"] = str(cfg.predict)
    if cfg.train:
        env["COG_TRAIN_TYPE_STUB"] = cfg.train
    if cfg.concurrency is not None and cfg.concurrency.max:
        env["COG_MAX_CONCURRENCY"] = str(cfg.concurrency.max)
    elif concurrency is not None:
        env["COG_MAX_CONCURRENCY"] = str(concurrency)
    argv = [str(run_env.python), "-m", "cog.server.http", "--host", host]
    return _Plan(argv, env, work, schema, cleanup=work)


def _model_schema(cfg: cogconfig.Config, sdk: str) -> tuple[dict[str, Any], int | None]:
    """The schema Cog's build would write (and ``@cog.concurrent``'s N), read from the source:
    a predictor it cannot read is one ``cog build`` refuses too (exit 2)."""
    schema = cogschema.generate(cfg.root, cfg.predict, cfg.train, version=sdk)
    return schema, cogschema.decorator_concurrency(cfg.root, cfg.predict, cfg.train)


def _image_plan(name: str, port: int, host: str) -> _Plan:
    from skiff.image.layout import cache_dir
    from skiff.runtime import image

    unpacked = image.prepare(name, cache_dir())
    argv = image.bwrap_argv(unpacked, port, host)
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    return _Plan(argv, env, Path("/"), unpacked.schema)


def _plan(target: str | None, folder: Path, port: int, host: str) -> _Plan:
    return _image_plan(target, port, host) if target else _folder_plan(folder, port, host)


def _cleanup(plan: _Plan) -> None:
    from skiff.runtime.srcdir import remove_srcdir

    if plan.cleanup is not None:
        remove_srcdir(plan.cleanup)


def predict(
    target: str | None,
    folder: Path,
    inputs: Sequence[str],
    output: str | None,
    *,
    as_json: bool = False,
    cwd: Path | None = None,
) -> int:
    """One prediction, printed as ``cog predict`` prints it (``as_json``: the whole response).

    ``target`` is an image (cache tag or reference); without it, the model in ``folder``.
    Input files and the output path are taken from ``cwd`` (the current directory).
    """
    here = cwd or Path.cwd()
    destination = cli_io.output_target(output, here)
    try:
        with stop_on_signals():
            port = free_port()
            plan = _plan(target, folder, port, "127.0.0.1")
            try:
                request = None
                if plan.schema is not None:  # bad inputs fail before the model starts
                    request = cli_io.parse_inputs(list(inputs), plan.schema, here)
                server = Server(plan.argv, plan.env, plan.cwd, port, capture=True)
                _say("Starting the model and running setup()...")
                server.start()
                try:
                    timeout = httpx.Timeout(10.0, read=None)  # a prediction takes what it takes
                    with httpx.Client(timeout=timeout, trust_env=False) as client:
                        server.wait_ready(client)
                        schema = plan.schema or _served_schema(client, server.url)
                        if request is None:
                            request = cli_io.parse_inputs(list(inputs), schema, here)
                        _say("Running prediction...")
                        response = client.post(f"{server.url}/predictions", json={"input": request})
                finally:
                    server.stop()
            finally:
                _cleanup(plan)
    except Stopped as stop:
        _say("interrupted: the model was stopped")
        return stop.exit_code
    return _report(response, schema, destination, here, write_values=bool(output), as_json=as_json)


def _served_schema(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        response = client.get(f"{url}/openapi.json")
        schema = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        schema = {}
    return schema if isinstance(schema, dict) else {}


def _report(
    response: httpx.Response,
    schema: dict[str, Any],
    destination: Path,
    cwd: Path,
    *,
    write_values: bool,
    as_json: bool,
) -> int:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 422:
        raise InvalidInput(
            _validation_message(body),
            "give inputs as -i NAME=VALUE, and a local file as -i NAME=@path",
        )
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("error") or body.get("detail") if isinstance(body, dict) else None
        raise SkiffError(
            f"the model answered HTTP {response.status_code}: {detail or response.text[:500]}"
        )
    status = body.get("status")
    if status == "succeeded":
        rendered = cli_io.render(
            body,
            cli_io.output_schema(schema),
            schema,
            destination,
            write_values=write_values and not as_json,
        )
        for path in rendered.written:
            _say(f"Written output to: {_shown(path, cwd)}")
        if as_json:
            if rendered.written:
                paths = [_shown(p, cwd) for p in rendered.written]
                body["output"] = paths if isinstance(body.get("output"), list) else paths[0]
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
        elif rendered.stdout is not None:
            sys.stdout.write(rendered.stdout + "\n")
        elif not rendered.written:
            _say("warning: No output generated")
        sys.stdout.flush()
        return 0
    if as_json:
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        sys.stdout.flush()
        return 1
    raise SkiffError(f'Prediction failed with status "{status}": {body.get("error")}')


def _validation_message(body: Any) -> str:
    """Cog's CLI lists each refused field as ``- NAME: message``; so does skiff."""
    details = body.get("detail") if isinstance(body, dict) else None
    if isinstance(details, list) and details:
        parts = []
        for item in details:
            loc = [str(x) for x in item.get("loc", []) if x not in ("body", "input")]
            parts.append(f"- {'.'.join(loc) or 'input'}: {item.get('msg', 'invalid')}")
        return "the inputs you passed could not be validated:\n" + "\n".join(parts)
    return f"the inputs you passed could not be validated: {body}"


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def serve(target: str | None, folder: Path, port: int, host: str = "127.0.0.1") -> int:
    """Cog's HTTP API on ``host:port`` until the server exits or skiff gets a signal."""
    try:
        with stop_on_signals():
            check_port(host, port)
            plan = _plan(target, folder, port, host)
            try:
                server = Server(
                    plan.argv, plan.env, plan.cwd, port, capture=True, show_all=True, host=host
                )
                server.start()
                _say(f"Serving Cog's HTTP API on http://{host}:{port} (Ctrl-C to stop)")
                try:
                    code = server.wait()
                finally:
                    server.stop()
            finally:
                _cleanup(plan)
    except Stopped as stop:
        return stop.exit_code
    return code


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
