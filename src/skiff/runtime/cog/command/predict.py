"""``python -m cog.command.predict -i NAME=VALUE``: setup plus one prediction, in-process.

Used by ``skiff predict``. Prints the prediction (Cog's response shape) as JSON on stdout;
the predictor's own prints go to stderr. File outputs are written to ``--output-dir``
and reported by path. Exit status: 0 succeeded, 1 failed or canceled, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, TextIO

from .. import logcapture
from ..config import ConfigError, predictor_ref, trainer_ref
from ..executor import MainThreadExecutor
from ..files import OutputFiles, discard_if_temporary
from ..introspect import InputSpec, Primitive
from ..prediction import Prediction, mask_secrets, new_prediction_id, now_iso
from ..predictor import PredictorLoadError
from ..runner import Runner
from ..validation import InputError, validate_inputs


class LocalOutputFiles(OutputFiles):
    """Copies output files into a directory instead of encoding them as data URIs."""

    def __init__(self, output_dir: str) -> None:
        super().__init__(None)
        self.output_dir = output_dir

    def encode(self, value: Any, prefix: str | None = None) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        if isinstance(value, os.PathLike):
            source: str = os.path.abspath(os.fspath(value))
            if os.path.samefile(os.path.dirname(source), self.output_dir):
                return source  # already where it belongs
        if isinstance(value, os.PathLike):
            name = os.path.basename(os.fspath(value)) or "output"
        else:
            name = os.path.basename(str(getattr(value, "name", "output")))
        target = _unique(os.path.join(self.output_dir, name))
        if isinstance(value, os.PathLike):
            shutil.copyfile(os.fspath(value), target)
            discard_if_temporary(os.fspath(value))
        else:
            data = value.read()
            with open(target, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        return os.path.abspath(target)


def _unique(path: str) -> str:
    stem, ext = os.path.splitext(path)
    candidate, n = path, 1
    while os.path.exists(candidate):
        candidate = f"{stem}-{n}{ext}"
        n += 1
    return candidate


class UsageError(Exception):
    pass


def parse_cli_inputs(specs: dict[str, InputSpec], pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings to raw input values; ``@path`` names a local file for Path inputs.

    Values stay strings where the type is scalar: validation coerces them as it does JSON.
    Repeating a name builds a list.
    """
    raw: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"invalid input {pair!r}: expected NAME=VALUE")
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "(none)"
            raise UsageError(f"unknown input {name!r}; the predictor accepts: {known}")
        converted: Any = value
        prim = spec.type.primitive
        if prim in (Primitive.PATH, Primitive.FILE) and value.startswith("@"):
            converted = value[1:]
        elif prim is Primitive.ANY:
            try:
                converted = json.loads(value)
            except ValueError:
                converted = value
        if spec.type.repetition.is_list:
            raw.setdefault(name, []).append(converted)
        elif name in raw:
            raise UsageError(f"input {name!r} given twice but it is not a list")
        else:
            raw[name] = converted
    return raw


def _emit(out: TextIO, body: Any) -> None:
    out.write(json.dumps(body, indent=2) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cog.command.predict")
    parser.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("-o", "--output-dir", default=".", help="where file outputs are written")
    parser.add_argument("--predictor", default=None, help="file.py:Name (default: cog.yaml)")
    parser.add_argument(
        "--train", action="store_true", help="run the trainer (train: in cog.yaml) instead"
    )
    args = parser.parse_args(argv)

    out = sys.stdout
    logcapture.install(stdout=sys.stderr, stderr=sys.stderr)
    cwd = os.getcwd()
    try:
        if args.train:
            ref = args.predictor or trainer_ref(cwd)
            if ref is None:
                raise ConfigError("this model has no trainer: add 'train:' to cog.yaml")
        else:
            ref = args.predictor or predictor_ref(cwd)
        executor = MainThreadExecutor(on_signal=lambda: None)
        runner = Runner.load(
            ref,
            cwd,
            training=args.train,
            files=LocalOutputFiles(args.output_dir),
            executor=executor,
        )
        raw = parse_cli_inputs(runner.info.inputs, args.input)
    except (ConfigError, PredictorLoadError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"error: loading the predictor failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    values, errors = validate_inputs(
        runner.info.inputs, raw, allow_local_paths=True, loc_prefix=("input",)
    )
    if errors:
        for err in errors:
            print(f"error: input {_where(err)}: {err.msg}", file=sys.stderr)
        _emit(out, {"detail": [e.to_json() for e in errors]})
        return 2
    if not runner.setup():
        sys.stderr.write(runner.setup_result.to_json()["logs"])
        print("error: setup() failed", file=sys.stderr)
        return 1
    prediction = Prediction(
        id=new_prediction_id(), input=mask_secrets(runner.info, raw), created_at=now_iso()
    )
    # Predict on this (main) thread, as setup() did and as the server does.
    runner.start(prediction, values)
    executor.stop()
    executor.run_forever()
    _emit(out, prediction.to_json())
    return 0 if prediction.status == "succeeded" else 1


def _where(err: InputError) -> str:
    return ".".join(str(part) for part in err.loc[1:]) or "input"


if __name__ == "__main__":
    sys.exit(main())
