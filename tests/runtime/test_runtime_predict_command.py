"""`python -m cog.command.predict`: the local runner behind `skiff predict`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import FIXTURES, python_stdlib_only, runtime_env


def predict(folder: str | Path, *args: str, ref: str = "predict.py:Predictor", **env: str) -> Any:
    return subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.predict", "--predictor", ref, *args],
        cwd=FIXTURES / folder,
        env=runtime_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_runs_setup_and_one_prediction(tmp_path: Path) -> None:
    result = predict("echo", "-i", "text=hello world", "-i", "repeat=2", "-i", "token=abc")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)  # stdout is only the JSON document
    assert body["status"] == "succeeded"
    assert body["output"] == ["hello", "world", "hello", "world"]
    assert body["input"]["token"] == "**********"
    # The predictor's prints go to stderr (and into logs), never onto stdout.
    assert "loading weights" in result.stderr
    assert "echoing 'hello world'" in body["logs"]


def test_file_inputs_and_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("local")
    out = tmp_path / "out"
    result = predict("files", "-i", f"document=@{doc}", "-i", "suffix=?", "-o", str(out))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert Path(body["output"]).read_text() == "local?"
    assert Path(body["output"]).parent == out


def test_iterator_of_files_lands_in_the_output_dir(tmp_path: Path) -> None:
    result = predict("stream", "-i", "count=3", "-o", str(tmp_path), ref="predict.py:Frames")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)["output"]
    assert [Path(p).read_text() for p in paths] == ["0", "1", "2"]


def test_structured_output(tmp_path: Path) -> None:
    result = predict("structured", "-i", "text=abc", "-o", str(tmp_path))
    body = json.loads(result.stdout)
    assert body["output"]["text"] == "ABC"
    assert body["output"]["extra"] is None
    assert Path(body["output"]["file"]).read_text() == "abc"


def test_invalid_input_exits_2_naming_the_field() -> None:
    result = predict("echo", "-i", "text=x", "-i", "repeat=lots")
    assert result.returncode == 2
    assert "input repeat: value is not a valid integer" in result.stderr
    assert json.loads(result.stdout)["detail"][0]["loc"] == ["input", "repeat"]
    unknown = predict("echo", "-i", "colour=red")
    assert unknown.returncode == 2
    assert "unknown input 'colour'" in unknown.stderr


def test_setup_failure_exits_1() -> None:
    result = predict("broken", "-i", "x=1")
    assert result.returncode == 1
    assert "weights missing" in result.stderr
    assert "setup() failed" in result.stderr


def test_file_type_input_is_an_open_file(tmp_path: Path) -> None:
    doc = tmp_path / "blob.bin"
    doc.write_bytes(b"bytes here")
    result = predict("files", "-i", f"blob=@{doc}", ref="predict.py:Reader")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == "bytes here"


def test_async_predictors() -> None:
    result = predict("asyncs", "-i", "x=41")
    assert json.loads(result.stdout)["output"] == 42, result.stderr
    result = predict("asyncs", "-i", "n=3", ref="predict.py:Streamer")
    assert json.loads(result.stdout)["output"] == ["0", "1", "2"], result.stderr


def test_setup_receives_cog_weights(tmp_path: Path) -> None:
    result = predict("asyncs", ref="predict.py:Weighted", COG_WEIGHTS=str(tmp_path))
    assert json.loads(result.stdout)["output"] == str(tmp_path), result.stderr
    result = predict("asyncs", ref="predict.py:Weighted")
    assert json.loads(result.stdout)["output"] == "None", result.stderr


def test_custom_metrics_join_predict_time() -> None:
    result = predict("structured", "-i", "tokens=4", ref="predict.py:Metered")
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["input_token_count"] == 4
    assert metrics["seen"] == 1
    assert metrics["steps"] == 4
    assert metrics["predict_time"] >= 0


def test_enum_inputs_arrive_as_members() -> None:
    result = predict("stream", "-i", "colour=blue", ref="predict.py:paint")
    assert json.loads(result.stdout)["output"] == "Colour.BLUE", result.stderr
    result = predict("stream", ref="predict.py:paint")
    assert json.loads(result.stdout)["output"] == "Colour.RED", result.stderr
    result = predict("stream", "-i", "colour=green", ref="predict.py:paint")
    assert result.returncode == 2


def test_an_output_already_in_the_output_dir_is_not_copied(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor, Path\n\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self) -> Path:\n"
        "        out = Path('result.txt')\n"
        "        out.write_text('done')\n"
        "        return out\n"
    )
    result = predict(tmp_path, "-o", str(tmp_path))
    assert json.loads(result.stdout)["output"] == str(tmp_path / "result.txt"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".txt") == ["result.txt"]


def test_train_flag_runs_the_trainer(tmp_path: Path) -> None:
    result = subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.predict", "--train", "-i", "steps=2",
         "-o", str(tmp_path)],
        cwd=FIXTURES / "trainer", env=runtime_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Path(json.loads(result.stdout)["output"]["weights"]).read_text() == "ww"
    no_trainer = subprocess.run(
        [*python_stdlib_only(), "-m", "cog.command.predict", "--train"],
        cwd=FIXTURES / "echo", env=runtime_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_trainer.returncode == 2
    assert "this model has no trainer" in no_trainer.stderr
