"""cog.yaml: valid files load; every mistake is one ConfigError naming the field and the line."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff import config
from skiff.config import BuildConfig, Concurrency, ConfigError, RunStep, Weight, WeightSource
from skiff.errors import InvalidInput

PREDICT_PY = """\
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, text: str) -> str:
        return text
"""


def write(folder: Path, cog_yaml: str, files: dict[str, str] | None = None) -> Path:
    (folder / "cog.yaml").write_text(textwrap.dedent(cog_yaml))
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


# --- valid files ----------------------------------------------------------------------------------


def test_minimal(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'predict: "predict.py:Predictor"\n'))
    assert cfg.root == tmp_path
    assert cfg.predict == "predict.py:Predictor"
    assert cfg.build == BuildConfig()
    assert cfg.build.python_version == config.DEFAULT_PYTHON_VERSION == "3.13"  # Cog's default
    assert cfg.image is None and cfg.concurrency is None and cfg.environment == []


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "# nothing yet\n"))
    assert cfg.predict is None and cfg.build == BuildConfig()


def test_complete(tmp_path: Path) -> None:
    cfg = config.load(
        write(
            tmp_path,
            """\
            # Configuration for Cog
            build:
              python_version: "3.11.4"
              python_packages:
                - pillow==8.3.1
                - tensorflow==2.5.0
              cuda: "12.1"
              cudnn: "8"
              sdk_version: "0.18.0"
            image: "r8.im/your-username/your-model"
            predict: "predict.py:Predictor"
            train: "train.py:train"
            concurrency:
              max: 4
              default_target: 2
            environment:
              - HF_HOME=/src/cache
              - GREETING=a=b
            """,
        )
    )
    assert cfg.build.python_version == "3.11.4"
    assert cfg.build.python_packages == ["pillow==8.3.1", "tensorflow==2.5.0"]
    assert (cfg.build.cuda, cfg.build.cudnn, cfg.build.sdk_version) == ("12.1", "8", "0.18.0")
    assert cfg.image == "r8.im/your-username/your-model"
    assert cfg.train == "train.py:train"
    assert cfg.concurrency == Concurrency(max=4, default_target=2)
    assert cfg.environment_vars == {"HF_HOME": "/src/cache", "GREETING": "a=b"}
    assert cfg.line_of("build.python_packages[1]") == 6
    assert cfg.line_of("concurrency.max") == 14
    assert cfg.line_of("concurrency.nothing") == 13  # falls back to the enclosing field
    ref = cfg.image_reference()
    assert ref is not None and ref.repository.path == "your-username/your-model"


def test_unquoted_versions_keep_their_text(tmp_path: Path) -> None:
    # YAML reads 3.10 as the float 3.1; Cog (and skiff) read the text as written.
    cfg = config.load(write(tmp_path, "build:\n  python_version: 3.10\n  cuda: 11.0\n"))
    assert (cfg.build.python_version, cfg.build.cuda) == ("3.10", "11.0")


def test_run_is_the_newer_name_for_predict(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'run: "run.py:Runner"\n'))
    assert (cfg.predict, cfg.predict_field) == ("run.py:Runner", "run")


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "build:\n  python_packages:\n  python_requirements: ''\nenvironment:\n")
    )
    assert cfg.build.python_packages == [] and cfg.build.python_requirements is None


def test_unbuilt_features_pass_when_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
        build:
          gpu: true
          system_packages: [ffmpeg]
          run:
            - echo plain
            - command: pip install private
              mounts:
                - type: secret
                  id: pip
                  target: /etc/pip.conf
        weights:
          - name: base
            target: /src/weights
            source: {uri: "hf://org/model"}
        predict: predict.py:Predictor
        """,
    )
    cfg = config.load(tmp_path, allow_unbuilt=True)
    assert cfg.build.gpu and cfg.build.system_packages == ["ffmpeg"]
    assert cfg.build.run[0] == RunStep(command="echo plain")
    assert cfg.build.run[1].mounts[0].target == "/etc/pip.conf"
    assert cfg.weights == [
        Weight(name="base", target="/src/weights", source=[WeightSource(uri="hf://org/model")])
    ]


# --- errors: each names the field and the line ----------------------------------------------------

ERRORS = [
    # (id, cog.yaml, line, field, words the message must contain)
    ("yaml-syntax", "build:\n  python_version: '3.12\npredict: x\n", 2, None, ["invalid YAML"]),
    ("tab-indent", "build:\n\tgpu: true\n", 2, None, ["invalid YAML"]),
    ("not-a-mapping", "- build\n- predict\n", 1, None, ["must be a mapping"]),
    (
        "top-level-typo",
        "build:\n  gpu: false\npredcit: predict.py:Predictor\n",
        3,
        "predcit",
        ["unknown field 'predcit'", "did you mean 'predict'?"],
    ),
    (
        "build-typo",
        "build:\n  gpu: false\n  cuda: '12.1'\n  pyton_version: '3.12'\n",
        4,
        "build.pyton_version",
        [
            "cog.yaml line 4: unknown field 'pyton_version' in build"
            " (did you mean 'python_version'?)"
        ],
    ),
    ("case-typo", "Build:\n  gpu: false\n", 1, "Build", ["did you mean 'build'?"]),
    (
        "nested-typo",
        "build:\n  run:\n    - command: ls\n      mount: []\n",
        4,
        "build.run[0].mount",
        ["did you mean 'mounts'?"],
    ),
    ("bool-type", "build:\n  gpu: 'yes'\n", 2, "build.gpu", ["must be true or false"]),
    (
        "list-type",
        "build:\n  python_packages: numpy\n",
        2,
        "build.python_packages",
        ["must be a list", "not the text 'numpy'"],
    ),
    ("str-type", "predict: 12\n", 1, "predict", ["must be text"]),
    ("item-type", "build:\n  python_packages:\n    - ok\n    - [1]\n", 4, None, ["text"]),
    ("int-type", "concurrency:\n  max: lots\n", 2, "concurrency.max", ["whole number"]),
    ("mapping-type", "build: [gpu]\n", 1, "build", ["must be a mapping"]),
    ("missing", "concurrency:\n  default_target: 2\n", 1, "concurrency.max", ["missing", "max"]),
    (
        "literal",
        "build:\n  run:\n    - command: ls\n      mounts:\n        - {type: cache, id: a,"
        " target: /a}\n",
        5,
        "build.run[0].mounts[0].type",
        ["'secret'"],
    ),
    ("duplicate", "predict: a.py:A\nbuild: {}\npredict: b.py:B\n", 3, "predict", ["duplicate"]),
    ("non-text-key", "build:\n  1: x\n", 2, None, ["plain text"]),
    (
        "packages-and-requirements",
        "build:\n  python_packages: [numpy]\n  python_requirements: requirements.txt\n",
        3,
        "build.python_requirements",
        ["not both"],
    ),
    ("predict-and-run", "predict: a.py:A\nrun: a.py:A\n", 2, "run", ["same field"]),
    ("predict-format", "predict: predict:Predictor\n", 1, "predict", ["predict.py:Predictor"]),
    (
        "python-old",
        "build:\n  python_version: '3.8'\n",
        2,
        None,
        ["minimum supported Python version is 3.10. requested 3.8"],
    ),
    ("sdk-junk", "build:\n  sdk_version: latest\n", 2, "build.sdk_version", ["0.23.1"]),
    ("sdk-old", "build:\n  sdk_version: '0.9.4'\n", 2, "build.sdk_version", ["0.16.0"]),
    ("python-junk", "build:\n  python_version: latest\n", 2, None, ["'3.12'"]),
    ("python-2", "build:\n  python_version: 2.7\n", 2, None, ["not supported"]),
    ("cuda-old", "build:\n  cuda: '10.2'\n", 2, "build.cuda", ["too old"]),
    ("concurrency-zero", "concurrency:\n  max: 0\n", 2, "concurrency.max", ["at least 1"]),
    (
        "concurrency-python",
        "build:\n  python_version: '3.10'\nconcurrency:\n  max: 2\n",
        4,
        "concurrency.max",
        ["3.11"],
    ),
    ("env-format", "environment:\n  - JUST_A_NAME\n", 2, "environment[0]", ["NAME=value"]),
    ("env-denied", "environment:\n  - A=1\n  - CUDA_HOME=/x\n", 3, None, ["CUDA_HOME"]),
    ("env-twice", "environment:\n  - A=1\n  - A=2\n", 3, "environment[1]", ["twice"]),
    ("image", "image: https://r8.im/Me/Model\n", 1, "image", ["image:"]),
    ("weights-source", "weights:\n  - {name: a, target: /w, source: []}\n", 2, None, ["empty"]),
    (
        "misplaced-top",
        "python_version: '3.12'\n",
        1,
        "python_version",
        ["unknown field 'python_version' at the top level"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_errors(tmp_path: Path, text: str, line: int, field: str | None, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text), allow_unbuilt=True)
    err = caught.value
    assert isinstance(err, InvalidInput)  # exit code 2
    assert err.line == line
    assert err.message.startswith(f"cog.yaml line {line}")
    if field is not None:
        assert err.field == field
    for word in words:
        assert word in err.message
    assert "\n" not in err.message  # one sentence, never pydantic's multi-line dump
    assert "validation error" not in err.message and "pydantic" not in err.message


def test_yaml_error_has_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, "build:\n  gpu: [true\npredict: x.py:X\n"))
    assert caught.value.column is not None


def test_tabs_get_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, "build:\n\tgpu: true\n"))
    assert caught.value.hint is not None and "tabs" in caught.value.hint


def test_misplaced_fields_say_where_they_belong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, "python_version: '3.12'\n"))
    assert caught.value.hint == "'python_version' belongs under 'build:' (indented)"
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, "build:\n  predict: predict.py:Predictor\n"))
    assert caught.value.hint is not None and "top level" in caught.value.hint


def test_first_error_in_the_file_is_reported(tmp_path: Path) -> None:
    text = "build:\n  gpu: 1\n  pyton_version: '3.12'\nconcurrency: {max: x}\n"
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text))
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("weights:\n  - {name: w, target: /w, source: {uri: 'file://w'}}\n", "weights", 1),
    ],
)
def test_unbuilt_features_are_refused(tmp_path: Path, text: str, field: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text))
    err = caught.value
    assert (err.field, err.line) == (field, line)
    assert "skiff cannot" in err.message and "yet" in err.message
    assert err.hint is not None and field in err.hint


def test_newer_cog_build_fields_are_accepted(tmp_path: Path) -> None:
    """Cog's current cog.yaml has fields its published schema lacks (its own fixtures use them)."""
    cfg = config.load(write(tmp_path, "build:\n  cog_runtime: false\n  fast: true\n"))
    assert (cfg.build.cog_runtime, cfg.build.fast) == (False, True)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("build:\n  system_packages: [ffmpeg]\n", lambda c: c.build.system_packages == ["ffmpeg"]),
        ("build:\n  run:\n    - echo hi\n", lambda c: c.build.run[0].command == "echo hi"),
        ("build:\n  pre_install: [echo hi]\n", lambda c: c.build.pre_install == ["echo hi"]),
        (
            "build:\n  python_version: '3.11'\n  gpu: true\n  cuda: '12.1'\n",
            lambda c: c.build.gpu is True,
        ),
    ],
)
def test_build_steps_and_gpu_are_accepted(
    tmp_path: Path, text: str, check: Callable[[config.Config], bool]
) -> None:
    assert check(config.load(write(tmp_path, text)))


def test_empty_lists_of_unbuilt_features_are_fine(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "build:\n  system_packages: []\n  run:\n  gpu: false\n"))
    assert cfg.build.run == []


def test_missing_cog_yaml_points_at_skiff_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)
    assert caught.value.hint is not None and "skiff init" in caught.value.hint
    assert caught.value.line is None


def test_cog_yml_gets_a_rename_hint(tmp_path: Path) -> None:
    (tmp_path / "cog.yml").write_text("predict: predict.py:Predictor\n")
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)
    assert caught.value.hint == "rename cog.yml to cog.yaml"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope")


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_bytes(b"predict: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(tmp_path)


def test_recursive_alias_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, "build: &b\n  run: [*b]\n"), allow_unbuilt=True)


def test_merge_keys_work(tmp_path: Path) -> None:
    text = "base: &b {gpu: false}\n"  # unknown top-level key: merge keys still get line numbers
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text + "build:\n  <<: *b\n"))
    assert caught.value.field == "base"
    cfg = config.load(write(tmp_path, "build: &b {gpu: false}\npredict: p.py:P\n"))
    assert cfg.build.gpu is False


# --- local consistency: the files cog.yaml names --------------------------------------------------


def test_local_ok(tmp_path: Path) -> None:
    files = {
        "predict.py": PREDICT_PY,
        "train.py": "def train(n: int) -> None: ...\n",
        "requirements.txt": "numpy\n",
    }
    text = """\
        build:
          python_requirements: requirements.txt
        predict: predict.py:Predictor
        train: train.py:train
        """
    cfg = config.load(write(tmp_path, text, files))
    config.check_local(cfg)
    assert config.predictor_ref(cfg) == (tmp_path.resolve() / "predict.py", "Predictor")


LOCAL_OK = [
    ("subfolder", "src/model.py:Predictor", "src/model.py", "class Predictor: pass\n"),
    ("imported", "predict.py:Predictor", "predict.py", "from impl import Impl as Predictor\n"),
    ("assigned", "predict.py:Predictor", "predict.py", "class A: ...\nPredictor = A\n"),
    (
        "conditional",
        "predict.py:P",
        "predict.py",
        "try:\n    import x\nexcept ImportError:\n    class P: ...\nelse:\n    P = x.P\n",
    ),
    ("star-import", "predict.py:Predictor", "predict.py", "from impl import *\n"),
    ("run-key", "run.py:Runner", "run.py", "class Runner: ...\n"),
]


@pytest.mark.parametrize(
    ("ref", "file", "source"), [pytest.param(*c[1:], id=c[0]) for c in LOCAL_OK]
)
def test_local_predictor_found(tmp_path: Path, ref: str, file: str, source: str) -> None:
    write(tmp_path, f"predict: {ref}\n", {file: source})
    config.check_local(config.load(tmp_path))


LOCAL_ERRORS = [
    # (id, cog.yaml, files, field, words)
    ("no-predict", "build: {}\n", {}, "predict", ["no predictor"]),
    ("missing-file", "predict: predict.py:Predictor\n", {}, "predict", ["does not exist"]),
    (
        "missing-class",
        "predict: predict.py:Predictor\n",
        {"predict.py": "class Other: ...\n"},
        "predict",
        ["does not define Predictor"],
    ),
    (
        "class-inside-function",
        "predict: predict.py:Predictor\n",
        {"predict.py": "def make():\n    class Predictor: ...\n    return Predictor\n"},
        "predict",
        ["does not define Predictor at the top level"],
    ),
    (
        "class-inside-class",
        "predict: predict.py:Predictor\n",
        {"predict.py": "class Outer:\n    class Predictor: ...\n"},
        "predict",
        ["does not define"],
    ),
    ("escape", "predict: ../x.py:P\n", {}, "predict", ["outside the model folder"]),
    ("absolute", "predict: /etc/x.py:P\n", {}, "predict", ["absolute path"]),
    ("folder", "predict: pkg.py:P\n", {"pkg.py/a": ""}, "predict", ["is a folder"]),
    (
        "missing-requirements",
        "build:\n  python_requirements: requirements.txt\npredict: predict.py:Predictor\n",
        {"predict.py": PREDICT_PY},
        "build.python_requirements",
        ["requirements.txt", "does not exist"],
    ),
    (
        "missing-train",
        "predict: predict.py:Predictor\ntrain: train.py:train\n",
        {"predict.py": PREDICT_PY, "train.py": "def other(): ...\n"},
        "train",
        ["does not define train"],
    ),
]


@pytest.mark.parametrize(
    ("text", "files", "field", "words"), [pytest.param(*c[1:], id=c[0]) for c in LOCAL_ERRORS]
)
def test_local_errors(
    tmp_path: Path, text: str, files: dict[str, str], field: str, words: list[str]
) -> None:
    cfg = config.load(write(tmp_path, text, files))
    with pytest.raises(ConfigError) as caught:
        config.check_local(cfg)
    err = caught.value
    assert err.field == field
    for word in words:
        assert word in err.message
    if field in cfg.lines:
        assert err.line == cfg.lines[field]
        assert err.message.startswith(f"cog.yaml line {err.line}: ")


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("class P: ...\n")
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(outside, folder / "predict.py")
    with pytest.raises(ConfigError, match="outside the model folder"):
        config.check_local(config.load(write(folder, "predict: predict.py:P\n")))


def test_typo_in_file_name_is_suggested(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "predict: predcit.py:Predictor\n", {"predict.py": PREDICT_PY})
    )
    with pytest.raises(ConfigError) as caught:
        config.check_local(cfg)
    assert caught.value.hint == "did you mean 'predict.py'?"


def test_typo_in_class_name_is_suggested(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "predict: predict.py:Predicter\n", {"predict.py": PREDICT_PY})
    )
    with pytest.raises(ConfigError) as caught:
        config.check_local(cfg)
    assert caught.value.hint == "did you mean 'Predictor'?"


def test_predictor_syntax_error_points_into_predictor(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "predict: predict.py:P\n", {"predict.py": "class P:\n    def f(:\n"})
    )
    with pytest.raises(ConfigError) as caught:
        config.check_local(cfg)
    err = caught.value
    assert err.path.name == "predict.py" and err.line == 2
    assert err.message.startswith("predict.py line 2")


def test_check_local_does_not_run_user_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\nclass Predictor: ...\n"
    config.check_local(
        config.load(write(tmp_path, "predict: predict.py:Predictor\n", {"predict.py": source}))
    )
    assert not marker.exists()


# --- the model follows Cog's schema ---------------------------------------------------------------


def test_fields_match_cogs_schema() -> None:
    schema = json.loads(
        resources.files("skiff").joinpath("data/cog_config_schema_v1.0.json").read_text()
    )
    props = schema["properties"]
    assert set(props) == set(config._CogFile.model_fields)
    assert set(props["build"]["properties"]) == set(BuildConfig.model_fields) - set(
        config.NEWER_BUILD_FIELDS
    )
    assert set(props["concurrency"]["properties"]) == set(Concurrency.model_fields)
    run_item = props["build"]["properties"]["run"]["items"]["anyOf"][1]
    assert set(run_item["properties"]) == set(RunStep.model_fields)
    weight = props["weights"]["items"]["properties"]
    assert set(weight) == set(Weight.model_fields)
    assert set(schema["$defs"]["weightSourceConfig"]["properties"]) == set(
        WeightSource.model_fields
    )


# --- whatever the text, the only failure is a ConfigError -----------------------------------------

_KEYS = [
    "build",
    "predict",
    "run",
    "python_version",
    "gpu",
    "python_packages",
    "concurrency",
    "max",
    "environment",
    "image",
    "weights",
    "command",
    "mounts",
    "pyton_version",
    "1",
]
_SYNTAX = [": ", ":", "\n", "  ", "\t", "- ", "[", "]", "{", "}", ",", "'", '"', "&a ", "*a", "#"]
_TAGS = ["<<: ", "!!python/object:os.system ", "!!binary ", "3.10", "true", "null", "~"]
_OTHER = ["x.py:P", "A=1", "---\n", "...", "%YAML 1.1\n", "? ", "|\n", ">\n", "\x00"]
_TOKENS = st.sampled_from([*_KEYS, *_SYNTAX, *_TAGS, *_OTHER])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=40).map("".join)))
def test_any_text_fails_only_with_config_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "cog.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = config.load(tmp_path, allow_unbuilt=True)
    except ConfigError as err:
        assert err.message and "\n" not in err.message
        return
    with contextlib.suppress(ConfigError):
        config.check_local(cfg)


_FIELDS = sorted(
    {name for section in config._SECTIONS.values() for name in section.model_fields}
    | {"pyton_version", "Build", "root", "lines"}
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 20),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["3.12", "3.9", "12.1", "predict.py:P", "../p.py:P", "A=1", "PATH=x", "secret"]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=6))
def test_any_structure_fails_only_with_config_error(tmp_path: Path, doc: dict[str, object]) -> None:
    (tmp_path / "cog.yaml").write_text(yaml.safe_dump(doc))
    try:
        cfg = config.load(tmp_path, allow_unbuilt=True)
    except ConfigError as err:
        assert err.message and "\n" not in err.message
        assert err.line is not None  # the file parsed, so every problem has a line
        return
    with contextlib.suppress(ConfigError):
        config.check_local(cfg)


def test_function_predictors_and_run_are_accepted(tmp_path: Path) -> None:
    """Cog 0.23 loads a function as well as a class, named by `run:` (or its older `predict:`)."""
    (tmp_path / "predict.py").write_text("def run(name: str) -> str:\n    return name\n")
    write(
        tmp_path, "build:\n  python_version: '3.11'\n  sdk_version: '0.23.1'\nrun: predict.py:run\n"
    )
    cfg = config.load(tmp_path)
    config.check_local(cfg)
    assert (cfg.predict, cfg.predict_field, cfg.build.sdk_version) == (
        "predict.py:run",
        "run",
        "0.23.1",
    )
