"""cog.yaml: load it, validate it as Cog does, and check it against the model folder.

Field names and accepted values follow Cog's own JSON schema
(``skiff/data/cog_config_schema_v1.0.json``) and Cog's semantic checks (``pkg/config/validate.go``).
Every problem becomes one ``ConfigError`` that names the field and its line in cog.yaml, so the user
never sees a traceback or pydantic's raw text.
"""

from __future__ import annotations

import ast
import difflib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from skiff import reference
from skiff.errors import InvalidInput

# CPython 3.11 builds ASTs with state shared between threads: parallel pushes in one process
# (several preflights) must not parse at the same time.
_AST_LOCK = threading.Lock()

FILENAME = "cog.yaml"
# Bounds on what cog.yaml may make skiff read and build: a real one is a few kilobytes and a few
# hundred values, aliases expanded.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000

# Cog's defaults and limits (pkg/config/config.go): Python 3.13 when unset, nothing older than 3.10,
# and concurrency above 1 needs 3.11. 3.14 is the newest CPython release.
DEFAULT_PYTHON_VERSION = "3.13"
MIN_PYTHON_MINOR = 10
MAX_PYTHON_MINOR = 14
MIN_PYTHON_MINOR_FOR_CONCURRENCY = 11
MIN_CUDA_MAJOR = 11

# Cog refuses these in `environment:`: its build or runtime sets them (pkg/config/env.go).
ENVIRONMENT_DENYLIST = (
    "PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONUNBUFFERED",
    "R8_*",
    "REPLICATE_*",
    "LIBRARY_PATH",
    "CUDA_*",
    "NVIDIA_*",
    "NV_*",
    "PGET_*",
    "HF_ENDPOINT",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "KUBERNETES_*",
)

_REF = re.compile(r"^(?P<file>[^:]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_PYTHON_VERSION = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)(\.\d+)?$")
_CUDA_VERSION = re.compile(r"^(?P<major>\d+)\.\d+(\.\d+)?$")
_CUDNN_VERSION = re.compile(r"^\d+(\.\d+)*$")
_SDK_VERSION = re.compile(
    r"^(?P<major>\d+)\.(?P<minor>\d+)(\.\d+)?([a-z]+\d*|\.post\d+|\.dev\d+)*$"
)
MIN_SDK_VERSION = (0, 16)  # Cog refuses older SDKs for the images it builds
_ENV_ITEM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Version fields may be written unquoted (`python_version: 3.10`); YAML would read 3.1.
_VERSION_FIELDS = (
    ("build", "python_version"),
    ("build", "cuda"),
    ("build", "cudnn"),
    ("build", "sdk_version"),
)

Loc = tuple[str | int, ...]


class ConfigError(InvalidInput):
    """cog.yaml (or a file it names) is wrong; says which field, on which line, and how to fix it.

    ``path`` is the file the ``line`` refers to (cog.yaml, or the predictor file for a syntax
    error); ``field`` is the dotted cog.yaml field, e.g. ``build.python_version``.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: Path,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        column: int | None = None,
        shown_as: str | None = None,
    ) -> None:
        where = shown_as or path.name
        if line is not None:
            where += f" line {line}"
            if column is not None:
                where += f", column {column}"
        super().__init__(f"{where}: {problem}", hint)
        self.problem = problem
        self.path = path
        self.line = line
        self.column = column
        self.field = field


# --- the typed model ------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: no silent coercion ("1" is not a number, 1 is not text); frozen: values, not state.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Mount(_Strict):
    """A secret mounted into one build step (like Dockerfile ``RUN --mount=type=secret``)."""

    type: Literal["secret"]
    id: str
    target: str


class RunStep(_Strict):
    """One ``build.run`` command; cog.yaml writes it as a plain string or as {command, mounts}."""

    command: str
    mounts: list[Mount] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        return {"command": data} if isinstance(data, str) else data


class BuildConfig(_Strict):
    """The ``build:`` stanza: what goes into the image."""

    python_version: str = DEFAULT_PYTHON_VERSION
    python_requirements: str | None = None
    python_packages: list[str] = Field(default_factory=list)
    system_packages: list[str] = Field(default_factory=list)
    run: list[RunStep] = Field(default_factory=list)
    pre_install: list[str] = Field(default_factory=list)  # deprecated by Cog in favour of run
    gpu: bool = False
    cuda: str | None = None
    cudnn: str | None = None
    sdk_version: str | None = None
    # Newer than the vendored schema (Cog's pkg/config has had them). skiff always installs
    # Cog's runtime from PyPI and always builds without a daemon: accepted, and change nothing.
    cog_runtime: bool | None = None
    fast: bool | None = None


# Build fields skiff accepts beyond the vendored JSON schema of cog.yaml.
NEWER_BUILD_FIELDS = frozenset({"cog_runtime", "fast"})


class Concurrency(_Strict):
    max: int
    default_target: int | None = None


class WeightSource(_Strict):
    uri: str
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class Weight(_Strict):
    name: str
    target: str
    source: list[WeightSource] = Field(min_length=1)

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value


class _CogFile(_Strict):
    """cog.yaml exactly as written (before aliases are merged and defaults applied)."""

    build: BuildConfig = Field(default_factory=BuildConfig)
    image: str | None = None
    model: str | None = None
    run: str | None = None  # Cog's newer name for predict
    predict: str | None = None
    train: str | None = None
    concurrency: Concurrency | None = None
    environment: list[str] = Field(default_factory=list)
    weights: list[Weight] = Field(default_factory=list)


class Config(BaseModel):
    """A valid cog.yaml, with ``root`` the model folder it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path
    build: BuildConfig
    predict: str | None = None  # "predict.py:Predictor", from `predict:` or `run:`
    predict_field: Literal["predict", "run"] = "predict"  # which key the user wrote
    train: str | None = None
    image: str | None = None
    model: str | None = None
    concurrency: Concurrency | None = None
    environment: list[str] = Field(default_factory=list)
    weights: list[Weight] = Field(default_factory=list)
    # dotted field -> line in cog.yaml, so later checks can point at the line too
    lines: dict[str, int] = Field(default_factory=dict, repr=False, exclude=True)

    @property
    def path(self) -> Path:
        return self.root / FILENAME

    @property
    def environment_vars(self) -> dict[str, str]:
        """``environment`` as a mapping (names are unique: load() refuses duplicates)."""
        pairs = (item.partition("=") for item in self.environment)
        return {name: value for name, _, value in pairs}

    def image_reference(self) -> reference.Reference | None:
        """``image:`` as a typed reference (load() has already checked that it parses)."""
        if self.image is None:
            return None
        try:
            return reference.parse(self.image)
        except reference.ReferenceError as exc:
            raise self.error("image", f"image: {exc.message}", exc.hint) from None

    def error(self, field: str, problem: str, hint: str | None = None) -> ConfigError:
        """A ConfigError about ``field``, pointing at its line in cog.yaml."""
        return ConfigError(
            problem, path=self.path, line=self.line_of(field), field=field, hint=hint
        )

    def line_of(self, field: str) -> int | None:
        """Line of ``field`` (dotted), or of its nearest enclosing field that is in the file."""
        while field not in self.lines:
            cut = max(field.rfind("."), field.rfind("["))
            if cut <= 0:
                return None
            field = field[:cut]
        return self.lines[field]


# --- loading --------------------------------------------------------------------------------------


def load(folder: Path, *, allow_unbuilt: bool = False) -> Config:
    """Read and validate ``folder/cog.yaml``.

    Features skiff cannot build yet (the ``weights`` entries) are refused unless
    ``allow_unbuilt``: a silently different image would be worse than no image.
    """
    path = folder / FILENAME
    text = _read(path, folder)
    data, index = _parse(text, path)
    try:
        raw = _CogFile.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, path, index) from None
    except RecursionError:
        raise ConfigError("too deeply nested to validate", path=path) from None

    lines = {_dotted(loc): line for loc, line in index.items() if loc}
    config = Config(
        root=folder,
        build=raw.build.model_copy(
            update={
                "python_requirements": raw.build.python_requirements or None,
                "cuda": raw.build.cuda or None,
                "cudnn": raw.build.cudnn or None,
            }
        ),
        predict=raw.predict or raw.run or None,
        predict_field="run" if raw.run and not raw.predict else "predict",
        train=raw.train or None,
        image=raw.image or None,
        model=raw.model or None,
        concurrency=raw.concurrency,
        environment=raw.environment,
        weights=raw.weights,
        lines=lines,
    )
    problems = list(_semantic_problems(config, raw))
    if not allow_unbuilt:
        problems += _unbuilt_problems(config)
    if problems:
        raise _first(problems)
    return config


def _read(path: Path, folder: Path) -> str:
    if not path.is_file():
        if not folder.is_dir():
            raise ConfigError(
                f"the model folder {folder} does not exist",
                path=path,
                shown_as=str(folder),
                hint="run skiff from the folder that holds cog.yaml",
            )
        near = [p.name for p in folder.iterdir() if p.name.lower() in ("cog.yml", "cog.yaml")]
        hint = (
            f"rename {near[0]} to {FILENAME}"
            if near
            else "run `skiff init` to create a starter cog.yaml and predict.py"
        )
        raise ConfigError(f"no {FILENAME} in {folder}", path=path, shown_as=str(path), hint=hint)
    try:
        # Bounded whatever the path is (a FIFO, a link to /dev/zero): read one byte past the cap.
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ConfigError(
                f"is larger than {MAX_BYTES // (1 << 20)} MiB",
                path=path,
                hint="cog.yaml holds settings; list large things (packages, weights) in the "
                "files it names",
            )
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"is not UTF-8 text (byte {exc.start})", path=path, hint="save cog.yaml as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", path=path) from None


def _parse(text: str, path: Path) -> tuple[Any, dict[Loc, int]]:
    """YAML text -> (plain data, line of every field). Keys are checked to be unique strings."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # control characters; raised before any parsing
        line = text[: exc.position].count("\n") + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        problem = f"invalid YAML: the control character {shown} is not allowed"
        raise ConfigError(problem, path=path, line=line) from None
    try:
        root = loader.get_single_node()
        if root is None:  # an empty cog.yaml is valid for Cog: all defaults
            return {}, {}
        _check_expansion(root, path)
        index: dict[Loc, int] = {}
        nodes: dict[Loc, yaml.Node] = {}
        _index(root, (), index, nodes, path, set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", path=path) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", path=path) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            f"must be a mapping of fields (build:, predict:, ...), not {_describe(data)}",
            path=path,
            line=root.start_mark.line + 1,
            hint="see https://cog.run/yaml for the format",
        )
    _drop_nulls(data, set())
    for loc in _VERSION_FIELDS:
        _restore_version_text(data, loc, nodes)
    return data, index


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuses a document whose aliases expand to more than MAX_NODES values, or into a value
    that holds itself. A few kilobytes of nested aliases ("billion laughs") otherwise become
    billions of values for the schema check and the image's config label to walk."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_:
            raise ConfigError(
                "invalid YAML: an alias refers to the value that holds it",
                path=path,
                line=node.start_mark.line + 1,
                hint="aliases (*name) may only refer to values defined before them",
            )
        open_.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        open_.discard(id(node))
        if total > MAX_NODES:
            raise ConfigError(
                f"invalid YAML: its aliases expand to more than {MAX_NODES} values",
                path=path,
                line=node.start_mark.line + 1,
                hint="write the values out, or use fewer nested aliases (*name)",
            )
        sizes[id(node)] = total
        return total

    size(root)


def _index(
    node: yaml.Node,
    loc: Loc,
    index: dict[Loc, int],
    nodes: dict[Loc, yaml.Node],
    path: Path,
    seen: set[int],
) -> None:
    # Aliases make the node graph cyclic or shared; each node is visited once.
    if id(node) in seen:
        return
    seen.add(id(node))
    nodes.setdefault(loc, node)
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                _index(value, loc, index, nodes, path, seen)
                continue
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                raise ConfigError(
                    f"field names must be plain text, not {_node_text(key)}",
                    path=path,
                    line=line,
                    field=_dotted(loc) or None,
                )
            name = key.value
            if name in first_line:
                raise ConfigError(
                    f"duplicate field '{_dotted((*loc, name))}' (first set on line"
                    f" {first_line[name]})",
                    path=path,
                    line=line,
                    field=_dotted((*loc, name)),
                    hint="keep one of them",
                )
            first_line[name] = line
            index.setdefault((*loc, name), line)
            _index(value, (*loc, name), index, nodes, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.setdefault((*loc, i), item.start_mark.line + 1)
            _index(item, (*loc, i), index, nodes, path, seen)


def _node_text(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(str(node.value))
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _drop_nulls(data: dict[Any, Any], seen: set[int]) -> None:
    """``field:`` with no value means "not set", as in Cog; drop it so the default applies."""
    if id(data) in seen:
        return
    seen.add(id(data))
    for key, value in list(data.items()):
        if value is None:
            del data[key]
        elif isinstance(value, dict):
            _drop_nulls(value, seen)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _drop_nulls(item, seen)


def _restore_version_text(data: dict[Any, Any], loc: Loc, nodes: dict[Loc, yaml.Node]) -> None:
    parent: Any = data
    for key in loc[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return
    value = parent.get(loc[-1])
    node = nodes.get(loc)
    if isinstance(value, int | float) and not isinstance(value, bool) and node is not None:
        parent[loc[-1]] = node.value


def _yaml_error(exc: yaml.MarkedYAMLError, path: Path) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = (exc.problem or exc.context or "unreadable").strip()
    hint = "YAML indents with spaces, not tabs" if "\\t" in problem or "\t" in problem else None
    if exc.context and exc.problem:
        context = exc.context.strip()
        # "end of stream (while scanning a quoted scalar)": where the scalar began is the news.
        if exc.context_mark and "end of stream" in problem:
            mark = exc.context_mark
            context += " that starts here"
        problem = f"{problem} ({context})"
    return ConfigError(
        f"invalid YAML: {problem}",
        path=path,
        line=mark.line + 1 if mark else None,
        column=mark.column + 1 if mark else None,
        hint=hint or "check the indentation and quoting around that line",
    )


# --- turning pydantic's errors into one clear sentence --------------------------------------------

_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): _CogFile,
    ("build",): BuildConfig,
    ("build", "run"): RunStep,
    ("build", "run", "mounts"): Mount,
    ("concurrency",): Concurrency,
    ("weights",): Weight,
    ("weights", "source"): WeightSource,
}

_EXPECTED = {
    "string_type": "text",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
}


def _translate(exc: ValidationError, path: Path, index: dict[Loc, int]) -> ConfigError:
    errors = [_one(err, path, index) for err in exc.errors(include_url=False)]
    return _first(errors)


def _one(err: ErrorDetails, path: Path, index: dict[Loc, int]) -> ConfigError:
    loc: Loc = tuple(err["loc"])
    line = _line(loc, index)
    field = _dotted(loc) or "cog.yaml"
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_field(loc, path, line)
    if kind == "missing":
        parent = _dotted(loc[:-1])
        where = f" in {parent}" if parent else ""
        return ConfigError(
            f"missing required field '{loc[-1]}'{where}", path=path, line=line, field=field
        )
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if kind == "list_type" and isinstance(err["input"], str):
            hint = f"write it as a list:\n  {loc[-1]}:\n    - {err['input']}"
        else:
            hint = None
        return ConfigError(
            f"{field} must be {expected}, not {_describe(err['input'])}",
            path=path,
            line=line,
            field=field,
            hint=hint,
        )
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return ConfigError(
            f"{field} must be {expected}, not {_describe(err['input'])}",
            path=path,
            line=line,
            field=field,
        )
    if kind == "too_short":
        return ConfigError(f"{field} must not be empty", path=path, line=line, field=field)
    return ConfigError(f"{field}: {err['msg']}", path=path, line=line, field=field)


def _unknown_field(loc: Loc, path: Path, line: int | None) -> ConfigError:
    key = str(loc[-1])
    section = tuple(part for part in loc[:-1] if isinstance(part, str))
    model = _SECTIONS.get(section)
    known = sorted(model.model_fields) if model else []
    parent = _dotted(loc[:-1])
    where = f"in {parent}" if parent else "at the top level"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
        name for name in known if name.lower() == key.lower()
    ]
    problem = f"unknown field '{key}' {where}"
    if close:
        problem += f" (did you mean '{close[0]}'?)"
    hint = f"fields allowed {where}: {', '.join(known)}" if known else None
    if section == () and key in BuildConfig.model_fields:
        hint = f"'{key}' belongs under 'build:' (indented)"
    elif section == ("build",) and key in _CogFile.model_fields:
        hint = f"'{key}' belongs at the top level, not under 'build:'"
    return ConfigError(problem, path=path, line=line, field=_dotted(loc), hint=hint)


def _line(loc: Loc, index: dict[Loc, int]) -> int | None:
    # The nearest enclosing field that is in the file (pydantic may add positions of its own).
    for end in range(len(loc), 0, -1):
        if loc[:end] in index:
            return index[loc[:end]]
    return None


def _dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _describe(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _first(errors: list[ConfigError]) -> ConfigError:
    """The problem nearest the top of the file: fixing from the top down is natural."""
    return min(errors, key=lambda e: (e.line is None, e.line or 0))


# --- Cog's rules beyond types ---------------------------------------------------------------------


def _semantic_problems(config: Config, raw: _CogFile) -> Iterator[ConfigError]:
    build = config.build
    if raw.run and raw.predict:
        yield config.error(
            "run",
            "both 'run' and 'predict' are set; they are the same field",
            "keep one: 'run' is Cog's newer name for 'predict'",
        )
    for field in (config.predict_field, "train"):
        value = config.predict if field == config.predict_field else config.train
        if value is not None and not _REF.match(value):
            example = "predict.py:Predictor" if field != "train" else "train.py:train"
            yield config.error(
                field,
                f"{field} must look like '{example}' (a .py file, a colon, a name), not {value!r}",
            )

    yield from _python_version_problems(config)
    if build.python_packages and build.python_requirements:
        yield config.error(
            "build.python_requirements",
            "set either build.python_packages or build.python_requirements, not both",
            "move the packages into the requirements file (Cog refuses both too)",
        )
    if build.cuda is not None:
        match = _CUDA_VERSION.match(build.cuda)
        if not match:
            yield config.error(
                "build.cuda", f"build.cuda must look like '12.1' or '12.1.1', not {build.cuda!r}"
            )
        elif int(match["major"]) < MIN_CUDA_MAJOR:
            yield config.error(
                "build.cuda", f"CUDA {build.cuda} is too old: Cog needs {MIN_CUDA_MAJOR} or newer"
            )
    if build.cudnn is not None and not _CUDNN_VERSION.match(build.cudnn):
        yield config.error(
            "build.cudnn", f"build.cudnn must be a version like '8' or '9', not {build.cudnn!r}"
        )
    if build.sdk_version is not None:
        sdk = _SDK_VERSION.match(build.sdk_version)
        if not sdk:
            yield config.error(
                "build.sdk_version",
                f"build.sdk_version must be a release of cog, e.g. '0.23.1', not"
                f" {build.sdk_version!r}",
            )
        elif (int(sdk["major"]), int(sdk["minor"])) < MIN_SDK_VERSION:
            yield config.error(
                "build.sdk_version",
                f"Cog SDK {build.sdk_version} is too old: Cog builds images with 0.16.0 or newer",
            )
    if config.concurrency is not None and config.concurrency.max < 1:
        yield config.error("concurrency.max", "concurrency.max must be at least 1")
    yield from _environment_problems(config)
    if config.image is not None:
        try:
            config.image_reference()
        except ConfigError as exc:
            yield exc
    yield from _model_problems(config)


def _model_problems(config: Config) -> Iterator[ConfigError]:
    """``model:`` (Cog 0.23): the bare repository pushed to; Cog refuses it beside ``image:``."""
    if config.model is None:
        return
    if config.image is not None:
        yield config.error(
            "model",
            "set either image: or model:, not both",
            "model: is the repository to push to (Cog 0.23); image: the older full reference",
        )
        return
    try:
        parsed = reference.parse(config.model)
    except reference.ReferenceError as exc:
        yield config.error("model", f"model: {exc.message}", exc.hint)
        return
    if parsed.tag is not None or parsed.digest is not None:
        yield config.error(
            "model",
            f"model: must be a bare repository (no tag or digest), not {config.model!r}",
            f"write model: {parsed.repository}; set COG_MODEL_TAG=TAG to choose the tag",
        )


def _python_version_problems(config: Config) -> Iterator[ConfigError]:
    version = config.build.python_version.strip()
    supported = f"3.{MIN_PYTHON_MINOR} to 3.{MAX_PYTHON_MINOR}"
    match = _PYTHON_VERSION.match(version)
    if not match:
        yield config.error(
            "build.python_version",
            f"build.python_version must look like '3.12' or '3.12.4', not {version!r}",
            f"supported versions: {supported}",
        )
        return
    major, minor = int(match["major"]), int(match["minor"])
    if major == 3 and minor < MIN_PYTHON_MINOR:
        # Cog's own words, so a user searching for them finds Cog's documentation too.
        yield config.error(
            "build.python_version",
            f"minimum supported Python version is 3.{MIN_PYTHON_MINOR}. requested {version}",
            f"Cog's runtime (cog, coglet) needs Python 3.{MIN_PYTHON_MINOR} or newer;"
            f" supported versions: {supported}",
        )
    elif major != 3 or not MIN_PYTHON_MINOR <= minor <= MAX_PYTHON_MINOR:
        yield config.error(
            "build.python_version",
            f"Python {version} is not supported: use {supported}",
            "Cog itself needs Python 3.10 or newer",
        )
    elif (
        config.concurrency is not None
        and config.concurrency.max > 1
        and minor < MIN_PYTHON_MINOR_FOR_CONCURRENCY
    ):
        yield config.error(
            "concurrency.max",
            f"concurrency.max above 1 needs Python 3.{MIN_PYTHON_MINOR_FOR_CONCURRENCY} or newer"
            f" (build.python_version is {version})",
        )


def _environment_problems(config: Config) -> Iterator[ConfigError]:
    seen: set[str] = set()
    for i, item in enumerate(config.environment):
        field = f"environment[{i}]"
        if not _ENV_ITEM.match(item):
            yield config.error(
                field,
                f"environment entries must look like NAME=value, not {item!r}",
                "names use letters, digits and _, and do not start with a digit",
            )
            continue
        name = item.split("=", 1)[0]
        if any(
            name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1]))
            for pattern in ENVIRONMENT_DENYLIST
        ):
            yield config.error(
                field,
                f"environment variable {name} cannot be set in cog.yaml",
                "the build or the runtime sets it (Cog refuses it too)",
            )
        elif name in seen:
            yield config.error(field, f"environment variable {name} is set twice")
        seen.add(name)


@dataclass(frozen=True)
class _Unbuilt:
    field: str
    what: str


def _unbuilt_problems(config: Config) -> list[ConfigError]:
    found: list[_Unbuilt] = []
    if config.weights:
        found.append(_Unbuilt("weights", "package weights entries"))
    return [
        config.error(
            item.field,
            f"skiff cannot {item.what} yet, so it will not build this model",
            f"remove {item.field} if the model works without it, or build this model with Cog",
        )
        for item in found
    ]


# --- local consistency (preflight) ----------------------------------------------------------------


def predictor_ref(config: Config) -> tuple[Path, str]:
    """The predictor file (absolute, inside the model folder) and the class name it must define."""
    if config.predict is None:
        raise ConfigError(
            "no predictor: set 'predict' to the class that runs predictions",
            path=config.path,
            field="predict",
            hint='add a line like: predict: "predict.py:Predictor"',
        )
    return _resolve_ref(config, config.predict_field, config.predict)


def check_local(config: Config) -> None:
    """Check that the files cog.yaml names exist in the model folder, without running user code.

    The predictor class must be bound at the top level of its module (a class, an import or an
    assignment); the module is parsed with ``ast``, never imported.
    """
    file, name = predictor_ref(config)
    # A class with predict() (or run()), or a function: Cog 0.23 loads either.
    _require_name(config, config.predict_field, file, name, functions_ok=True)
    if config.train is not None:
        file, name = _resolve_ref(config, "train", config.train)
        _require_name(config, "train", file, name, functions_ok=True)
    if config.build.python_requirements is not None:
        _inside(config, "build.python_requirements", config.build.python_requirements)


def _resolve_ref(config: Config, field: str, ref: str) -> tuple[Path, str]:
    match = _REF.match(ref)
    if not match:
        raise config.error(field, f"{field} must look like 'predict.py:Predictor', not {ref!r}")
    return _inside(config, field, match["file"]), match["name"]


def _inside(config: Config, field: str, relative: str) -> Path:
    """``relative`` resolved in the model folder; only files inside it go into the image."""
    root = config.root.resolve()
    if Path(relative).is_absolute():
        raise config.error(
            field,
            f"{field} names an absolute path ({relative}); it must be inside the model folder",
            f"use a path relative to {root}",
        )
    full = (root / relative).resolve()
    if not full.is_relative_to(root):
        raise config.error(
            field,
            f"{field} names {relative}, which is outside the model folder {root}",
            "only files inside the model folder are built into the image; move it in",
        )
    if not full.is_file():
        hint = None
        if full.parent.is_dir():
            siblings = [p.name for p in full.parent.iterdir() if p.is_file()]
            close = difflib.get_close_matches(full.name, siblings, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
        problem = "is a folder, not a file" if full.is_dir() else "does not exist"
        raise config.error(field, f"{field} names {relative}, which {problem}", hint)
    return full


def _require_name(config: Config, field: str, file: Path, name: str, *, functions_ok: bool) -> None:
    shown = str(file.relative_to(config.root.resolve()))
    try:
        with _AST_LOCK:
            tree = ast.parse(file.read_bytes(), filename=shown)
    except SyntaxError as exc:
        raise ConfigError(
            f"syntax error: {exc.msg}",
            path=file,
            line=exc.lineno,
            column=exc.offset,
            field=field,
            shown_as=shown,
            hint=f"cog.yaml's {field} points at this file; fix it before building",
        ) from None
    except (ValueError, OSError) as exc:  # null bytes, unreadable
        raise config.error(field, f"cannot read {shown}: {exc}") from None

    names, star = _top_level_names(tree)
    kind = names.get(name)
    if kind is None and not star:
        defined = sorted(n for n, k in names.items() if k == "class")
        close = difflib.get_close_matches(name, defined, n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else f"classes defined there: {', '.join(defined) or 'none'}"
        )
        raise config.error(
            field, f"{shown} does not define {name} at the top level of the module", hint
        )
    if kind == "function" and not functions_ok:
        raise config.error(
            field,
            f"{name} in {shown} is a function; {field} must name a class",
            "Cog loads a class with setup() and predict() (or run())",
        )


def _top_level_names(tree: ast.Module) -> tuple[dict[str, str], bool]:
    """Names bound at module level -> how ("class", "function", "other"); and whether `import *`."""
    names: dict[str, str] = {}
    star = False

    def visit(body: list[ast.stmt]) -> None:
        nonlocal star
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                names[stmt.name] = "class"
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                names[stmt.name] = "function"
            elif isinstance(stmt, ast.Import | ast.ImportFrom):
                for alias in stmt.names:
                    if alias.name == "*":
                        star = True
                    else:
                        names[alias.asname or alias.name.split(".")[0]] = "other"
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            names[node.id] = "other"
            # Conditional definitions (if/try/with at module level) still bind at top level.
            elif isinstance(stmt, ast.If | ast.For | ast.While | ast.With):
                visit(stmt.body)
                visit(getattr(stmt, "orelse", []))
            elif isinstance(stmt, ast.Try | ast.TryStar):
                visit(stmt.body)
                for handler in stmt.handlers:
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)

    visit(tree.body)
    return names, star
