"""The Python environment a model folder runs in: the model's packages and Cog's runtime.

``skiff predict`` and ``skiff serve`` in a model folder run Cog's own server (``cog`` +
``coglet`` from PyPI, as every Cog image has them) in a virtualenv that uv makes with the
cog.yaml Python version. The environment is kept in the cache under a key of everything that
decides its content (Python version, requirement lines, SDK version), so an unchanged model
starts at once the second time; a change of any of them makes a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from skiff.config import Config
from skiff.errors import BuildFailed, InvalidInput

# The newest Cog release this suite has verified; cog.yaml `build.sdk_version` overrides it.
DEFAULT_SDK_VERSION = "0.23.1"
_ENV_FORMAT = 1  # bump when the layout of an environment changes
_COMPLETE = ".skiff-complete"
_SDK_LINE = re.compile(r"^\s*(cog|coglet)\s*($|[=<>!~\[;@ ])", re.IGNORECASE)
_STDERR_TAIL = 15


@dataclass(frozen=True)
class RunEnv:
    """A ready environment: ``python`` has the model's packages, ``cog`` and ``coglet``."""

    root: Path
    sdk_version: str

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"


def sdk_version(cfg: Config) -> str:
    return cfg.build.sdk_version or DEFAULT_SDK_VERSION


def requirement_lines(cfg: Config, warn: Callable[[str], None]) -> list[str]:
    """The model's requirement lines without ``cog``/``coglet`` (Cog drops them too: the runtime
    is the one skiff installs, at the SDK version)."""
    if cfg.build.python_requirements:
        path = cfg.root / cfg.build.python_requirements
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the requirements file {path}: {exc.strerror}",
                "check build.python_requirements in cog.yaml",
            ) from exc
    else:
        lines = list(cfg.build.python_packages)
    kept = []
    for line in lines:
        if _SDK_LINE.match(line):
            warn(f"ignoring {line.strip()!r}: skiff installs Cog's runtime itself (sdk_version)")
            continue
        kept.append(line)
    return kept


def env_key(python_version: str, sdk: str, lines: list[str]) -> str:
    significant = sorted(s for s in (re.sub(r"(^|\s)#.*$", "", x).strip() for x in lines) if s)
    text = json.dumps([_ENV_FORMAT, python_version, sdk, significant])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def uv_command() -> list[str]:
    from skiff.image.pydeps import uv_command as find

    return find()


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    # skiff trusts the system certificate store, uv by default only its bundled roots.
    env.setdefault("UV_NATIVE_TLS", "1")
    # A missing Python is told to the user, not fetched from the internet behind their back.
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.pop("VIRTUAL_ENV", None)
    return env


def ensure_env(
    cfg: Config, cache: Path, warn: Callable[[str], None], say: Callable[[str], None]
) -> RunEnv:
    """The model's environment, made by uv if the cache does not have it yet (``say`` tells
    the user so: the first run of a model with large packages takes a while)."""
    sdk = sdk_version(cfg)
    lines = requirement_lines(cfg, warn)
    python_version = cfg.build.python_version
    root = cache / "run" / "env" / env_key(python_version, sdk, lines)
    env = RunEnv(root, sdk)
    if (root / _COMPLETE).exists():
        return env
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.with_suffix(".lock")):
        if (root / _COMPLETE).exists():  # another skiff made it while this one waited
            return env
        shutil.rmtree(root, ignore_errors=True)  # a half-made one, from an interrupted run
        count = len([line for line in lines if line.strip() and not line.lstrip().startswith("#")])
        say(
            f"Preparing the model's environment (Python {python_version}, cog {sdk}, "
            f"{count} requirement line{'s' if count != 1 else ''}); kept for the next run..."
        )
        try:
            _create(root, python_version, sdk, lines, cfg.root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / _COMPLETE).write_text(json.dumps({"python": python_version, "sdk": sdk}))
    return env


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create(root: Path, python_version: str, sdk: str, lines: list[str], folder: Path) -> None:
    uv = uv_command()
    # uv finds the host's interpreters (PATH, pyenv, uv's own); it downloads none (uv_env).
    found = _run([*uv, "python", "find", python_version], folder)
    if found.returncode != 0:
        raise BuildFailed(
            f"Python {python_version} (build.python_version in cog.yaml) is not installed on "
            f"this machine ({_first_error(found.stderr)})",
            f"install it (your system's python{python_version} package, pyenv, or "
            f"`uv python install {python_version}`) and run the command again",
        )
    interpreter = found.stdout.strip()
    made = _run([*uv, "venv", "--quiet", "--python", interpreter, str(root)], folder)
    if made.returncode != 0:
        raise BuildFailed(f"uv could not create the environment: {_tail(made.stderr)}")
    requirements = root / "skiff-requirements.txt"
    requirements.write_text("\n".join([*lines, f"cog=={sdk}", ""]), encoding="utf-8")
    # cwd is the model folder: relative paths in the requirements (./wheels/x.whl) are its own.
    installed = _run(
        [
            *uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(root / "bin" / "python"),
            "-r",
            str(requirements),
        ],
        folder,
    )
    if installed.returncode != 0:
        raise BuildFailed(
            f"installing the model's Python packages failed: {_tail(installed.stderr)}",
            "check python_packages / python_requirements and build.sdk_version in cog.yaml "
            "(and that PyPI can be reached)",
        )


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, env=uv_env(), capture_output=True, text=True)
    except OSError as exc:
        raise BuildFailed(f"cannot run uv ({argv[0]}): {exc.strerror}") from exc


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].removeprefix("error: ") if lines else "uv found none"


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_TAIL:]) or "no error output"
