"""``skiff predict`` in a model folder: Cog's own runtime (coglet) in a cached uv environment,
printing what ``cog predict`` prints (pkg/cli/predict.go in replicate/cog): a string output
alone, other outputs as indented JSON, file outputs written to ``-o`` and named on stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import copy_model, skiff


def test_class_predictor_prints_the_output_alone(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    done = skiff(
        "predict", "-C", folder, "-i", "text=hi", "-i", "times=3", "-i", "shout=true", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: HI HI HI\n"
    # The model's own print reaches the user (on stderr: stdout is the output alone).
    assert "repeating 'hi' 3 times" in done.stderr
    # The model folder is left as it was: the schema lives in the cache.
    assert sorted(p.name for p in folder.iterdir()) == ["cog.yaml", "predict.py"]


def test_function_predictor(tmp_path: Path) -> None:
    folder = copy_model("hello-fn", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "name=Ada", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello, Ada\n"


def test_json_prints_the_whole_response(tmp_path: Path) -> None:
    folder = copy_model("hello-fn", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "name=Ada", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "succeeded"
    assert body["output"] == "hello, Ada"
    assert body["id"]
    assert "predict_time" in body["metrics"]


def test_structured_output_is_go_style_json_and_packages_are_installed(tmp_path: Path) -> None:
    folder = copy_model("structured", tmp_path)
    done = skiff(
        "predict", "-C", folder, "-i", "words=a", "-i", "words=b", "-i", "scale=2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # Repeated -i makes a list; 2 * 2.0 printed as Go prints a whole float; keys sorted; <>&
    # escaped as Go's encoder does.
    assert done.stdout == (
        "{\n"
        '  "count": 4,\n'
        '  "first": "a",\n'
        '  "six": "1.17.0",\n'
        '  "tag": "\\u003ca\\u0026b\\u003e"\n'
        "}\n"
    )
    # `cog==0.1.0` in python_packages is dropped with a warning, as Cog drops it.
    assert "ignoring 'cog==0.1.0'" in done.stderr


def test_file_input_and_output_from_the_current_directory(tmp_path: Path) -> None:
    folder = copy_model("files", tmp_path)
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "doc.txt").write_text("some text\n")
    # -C points elsewhere: @doc.txt and -o out are both taken from the current directory.
    done = skiff("predict", "-C", folder, "-i", "document=@doc.txt", "-o", "out", cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (work / "out" / "output.txt").read_text() == "SOME TEXT\n"
    assert "Written output to: out/output.txt" in done.stderr
    assert not (folder / "out").exists()
    # --json: the whole response, the file output written and named by its path.
    again = skiff(
        "predict",
        "-C",
        folder,
        "-i",
        "document=@doc.txt",
        "-o",
        "out/again.txt",
        "--json",
        cwd=work,
    )
    assert again.returncode == 0, again.stderr
    body = json.loads(again.stdout)
    assert body["status"] == "succeeded" and body["output"] == "out/again.txt"
    assert (work / "out" / "again.txt").read_text() == "SOME TEXT\n"


def test_file_output_defaults_to_output_ext(tmp_path: Path) -> None:
    folder = copy_model("files", tmp_path)
    (tmp_path / "doc.txt").write_text("abc")
    done = skiff("predict", "-C", folder, "-i", "document=@doc.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output.txt").read_text() == "ABC"


def test_ill_typed_input_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "text=hi", "-i", "times=many", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "times" in done.stderr and "integer" in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_unknown_input_is_exit_2_before_the_model_starts(tmp_path: Path) -> None:
    folder = copy_model("echo", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "txt=hi", cwd=tmp_path)
    assert done.returncode == 2
    assert "no input named 'txt'" in done.stderr
    assert "text" in done.stderr  # the inputs it has
    assert "running setup" not in done.stderr


def test_failed_prediction_exits_1_with_the_error(tmp_path: Path) -> None:
    folder = copy_model("failing", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "text=boom", cwd=tmp_path)
    assert done.returncode == 1
    assert 'Prediction failed with status "failed"' in done.stderr
    assert "cannot handle boom" in done.stderr
    assert done.stdout == ""


def test_failed_setup_exits_1_with_the_setup_error(tmp_path: Path) -> None:
    folder = copy_model("badsetup", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "text=x", cwd=tmp_path)
    assert done.returncode == 1
    assert "setup failed" in done.stderr
    assert "the weights are missing" in done.stderr


def test_environment_is_reused_and_remade_on_change(tmp_path: Path) -> None:
    folder = copy_model("hello-fn", tmp_path)
    cache = Path(os.environ["SKIFF_CACHE_DIR"])
    assert skiff("predict", "-C", folder, "-i", "name=a", cwd=tmp_path).returncode == 0
    envs = sorted(p.name for p in (cache / "run" / "env").iterdir() if p.is_dir())
    assert len(envs) == 1
    made = (cache / "run" / "env" / envs[0] / "bin" / "python").stat().st_mtime_ns
    assert skiff("predict", "-C", folder, "-i", "name=b", cwd=tmp_path).returncode == 0
    assert (cache / "run" / "env" / envs[0] / "bin" / "python").stat().st_mtime_ns == made
    text = (folder / "cog.yaml").read_text()
    packages = 'python_version: "3.11"\n  python_packages: ["six==1.17.0"]'
    (folder / "cog.yaml").write_text(text.replace('python_version: "3.11"', packages))
    assert skiff("predict", "-C", folder, "-i", "name=c", cwd=tmp_path).returncode == 0
    assert len([p for p in (cache / "run" / "env").iterdir() if p.is_dir()]) == 2
    # Nothing of a run is left in the cache's working folders.
    assert list((cache / "run" / "src").iterdir()) == []


def test_missing_python_version_is_a_clear_message(tmp_path: Path) -> None:
    folder = copy_model("hello-fn", tmp_path)
    text = (folder / "cog.yaml").read_text().replace('"3.11"', '"3.12"')
    (folder / "cog.yaml").write_text(text)
    # Only 3.11 can be found: a PATH with this interpreter alone, and no uv-managed Pythons.
    only = tmp_path / "only-bin"
    only.mkdir()
    (only / "python3.11").symlink_to(sys.executable)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None
    (only / "uv").symlink_to(uv)
    env = {
        **os.environ,
        "PATH": str(only),
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "none"),
        "UV_PYTHON_PREFERENCE": "only-system",
    }
    done = subprocess.run(
        [sys.executable, "-m", "skiff.cli", "predict", "-C", str(folder), "-i", "name=a"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 4, done.stderr
    assert "Python 3.12" in done.stderr and "not installed" in done.stderr
    assert "uv python install 3.12" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_predictor_without_a_schema_from_skiff_still_runs(tmp_path: Path) -> None:
    """A union input and a cog.BaseModel output: whatever the schema generator makes of them,
    Cog's server runs the model (without a schema it validates nothing)."""
    folder = copy_model("union", tmp_path)
    done = skiff("predict", "-C", folder, "-i", "value=2.5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"value": "2.5"' in done.stdout
    assert done.stdout.startswith("{\n") and done.stdout.endswith("}\n")


def test_python_requirements_file_is_installed(tmp_path: Path) -> None:
    folder = copy_model("structured", tmp_path)
    text = (folder / "cog.yaml").read_text()
    start = text.index("  python_packages:")
    end = text.index("run:")
    (folder / "cog.yaml").write_text(
        text[:start] + "  python_requirements: requirements.txt\n" + text[end:]
    )
    (folder / "requirements.txt").write_text("# the model's packages\nsix==1.17.0\n")
    done = skiff("predict", "-C", folder, "-i", "words=a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"six": "1.17.0"' in done.stdout
    assert not (folder / ".cog").exists()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["cog.yaml", "predict.py", "requirements.txt"]
