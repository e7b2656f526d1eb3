"""Python dependencies for the target platform, installed by uv into a layer.

uv installs wheels for another platform and Python version than the host's
(``--python-platform``/``--python-version``), so no container or emulator is needed. Only wheels
are accepted by default (``--only-binary :all:``): building an sdist runs on the *host* and can
produce a binary for the wrong platform without any error, which is worse than a clear failure.

The packages land in ``/opt/skiff/site-packages`` (the builder puts it on ``PYTHONPATH`` and its
``bin`` on ``PATH``). uv writes console scripts with the host interpreter in their ``#!`` line;
those are rewritten to ``#!/usr/bin/env python3`` (and RECORD updated) so the layer works in the
image and is the same on every machine. The finished layer is cached by (requirements, Python
version, platform, uv version): unchanged requirements are not resolved or downloaded again.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from skiff.errors import BuildFailed, InvalidInput
from skiff.fsutil import write_atomic
from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import GrowingBlob, Layout
from skiff.image.oci import Platform, canonical_json
from skiff.image.sourcetree import file_mode

SITE_PACKAGES = "/opt/skiff/site-packages"
SCRIPT_SHEBANG = b"#!/usr/bin/env python3"

# glibc 2.28 (2018) covers every maintained base image, and accepts manylinux2014 wheels too.
_PLATFORM_TAGS = {"amd64": "x86_64-manylinux_2_28", "arm64": "aarch64-manylinux_2_28"}
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
# Requirement lines whose meaning depends on other files: their text is not a complete cache key.
_UNCACHEABLE = re.compile(r"^(-r|-c|-e|--requirement|--constraint|--editable|\.|/|file:)")
_STDERR_TAIL = 20


@dataclass(frozen=True)
class Requirements:
    """Requirement lines (``pip`` syntax), from cog.yaml's list or a requirements file."""

    lines: tuple[str, ...]
    base_dir: Path | None = None  # where relative paths in the lines are resolved

    @classmethod
    def of(cls, requirements: Sequence[str] | Path) -> Requirements:
        if isinstance(requirements, Path):
            try:
                text = requirements.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read the requirements file {requirements}: {exc.strerror}",
                    "check python_requirements in cog.yaml",
                ) from None
            return cls(tuple(text.splitlines()), requirements.parent)
        return cls(tuple(requirements))

    @property
    def significant(self) -> tuple[str, ...]:
        """The lines without comments and blanks, sorted (order does not change the install)."""
        out = []
        for line in self.lines:
            stripped = re.sub(r"(^|\s)#.*$", "", line).strip()
            if stripped:
                out.append(stripped)
        return tuple(sorted(out))

    @property
    def cacheable(self) -> bool:
        return not any(_UNCACHEABLE.match(line) for line in self.significant)


def uv_command() -> list[str]:
    """How to run uv: ``uv`` on PATH, else the ``uv`` Python package of this interpreter."""
    found = shutil.which("uv")
    if found:
        return [found]
    if find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise BuildFailed(
        "uv is needed to install the model's Python packages, and it was not found",
        "install it (pip install uv, or see https://docs.astral.sh/uv/) and try again",
    )


def uv_version(uv: Sequence[str]) -> str:
    try:
        done = subprocess.run([*uv, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildFailed(f"cannot run uv ({' '.join(uv)}): {exc}") from None
    return done.stdout.strip()


def python_platform(platform: Platform) -> str:
    """uv's ``--python-platform`` value for an image platform."""
    if platform.os != "linux" or platform.architecture not in _PLATFORM_TAGS:
        raise InvalidInput(
            f"cannot install Python packages for {platform}",
            "supported platforms: linux/amd64, linux/arm64",
        )
    return _PLATFORM_TAGS[platform.architecture]


def _uv_env() -> dict[str, str]:
    # skiff trusts the system certificate store (and SSL_CERT_FILE); uv by default trusts only
    # its bundled roots, which fails behind TLS-inspecting proxies. Old and new names of the knob.
    env = dict(os.environ)
    env.setdefault("UV_NATIVE_TLS", "1")
    env.setdefault("UV_SYSTEM_CERTS", "1")
    return env


def _check_python_version(version: str) -> None:
    if not _PYTHON_VERSION.match(version):
        raise InvalidInput(
            f"invalid Python version {version!r}", "write it as MAJOR.MINOR, e.g. 3.11"
        )


def _stderr_tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("Using ")]
    return "\n".join(lines[-_STDERR_TAIL:])


def install_python_deps(
    requirements: Sequence[str] | Path | Requirements,
    python_version: str,
    platform: Platform,
    target_dir: Path,
    *,
    binary_only: bool = True,
    stop: threading.Event | None = None,
) -> list[Entry]:
    """Installs the requirements into ``target_dir`` for the target platform; returns its entries.

    The entries place ``target_dir``'s content at ``SITE_PACKAGES`` in the image. Once ``stop``
    is set, uv is ended and the install fails with BuildFailed.
    """
    reqs = requirements if isinstance(requirements, Requirements) else Requirements.of(requirements)
    _check_python_version(python_version)
    uv = uv_command()
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skiff-req-") as tmp:
        # The file sits where relative paths in it were written to be resolved from.
        req_dir = reqs.base_dir or Path(tmp)
        fd, req_file = tempfile.mkstemp(dir=req_dir, prefix=".skiff-requirements-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(reqs.lines) + "\n")
            args = [
                *uv,
                "pip",
                "install",
                "--target",
                str(target_dir),
                "--python",
                sys.executable,  # only to satisfy uv; the platform flags below decide
                "--python-platform",
                python_platform(platform),
                "--python-version",
                python_version,
                *(["--only-binary", ":all:"] if binary_only else []),
                "--no-progress",
                "-r",
                req_file,
            ]
            done = _run_stoppable(args, stop)
        finally:
            os.unlink(req_file)
    if done.returncode != 0:
        advice = "check the package names and versions in cog.yaml" + (
            f"; every package needs a wheel for {platform} and Python {python_version}"
            " (sdists are not built, as they would be built for this machine's platform)"
            if binary_only
            else ""
        )
        raise BuildFailed(
            f"uv could not install the Python packages for {platform}, Python {python_version}",
            f"{_stderr_tail(done.stderr)}\n{advice}",
        )
    _fix_scripts(target_dir)
    return site_entries(target_dir)


_POLL_SECONDS = 0.1
_TERMINATE_GRACE_SECONDS = 5.0


def _run_stoppable(
    args: list[str], stop: threading.Event | None
) -> subprocess.CompletedProcess[str]:
    """Runs uv to its end, or until ``stop`` is set (another part of the build failed, or the
    user interrupted it): then uv is ended, and the build is not held up by an install whose
    layer nobody will use."""
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_uv_env()
    ) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if stop is None or not stop.is_set():
                    continue
            proc.terminate()
            try:
                proc.communicate(timeout=_TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise BuildFailed("stopped: another part of the build failed or was interrupted")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _fix_scripts(target_dir: Path) -> None:
    """Points console scripts at the image's python3, and keeps RECORD files truthful."""
    bin_dir = target_dir / "bin"
    if not bin_dir.is_dir():
        return
    fixed: dict[str, bytes] = {}
    for script in sorted(bin_dir.iterdir()):
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        first, sep, rest = data.partition(b"\n")
        if first.startswith(b"#!") and b"python" in first and first != SCRIPT_SHEBANG:
            data = SCRIPT_SHEBANG + sep + rest
            script.write_bytes(data)
            fixed[f"bin/{script.name}"] = data
    if not fixed:
        return
    for record in target_dir.glob("*.dist-info/RECORD"):
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
        changed = False
        for row in rows:
            if row and row[0] in fixed:
                row[1:3] = [_record_hash(fixed[row[0]]), str(len(fixed[row[0]]))]
                changed = True
        if changed:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(rows)
            record.write_text(out.getvalue(), encoding="utf-8")


def site_entries(target_dir: Path, image_dir: str = SITE_PACKAGES) -> list[Entry]:
    """Layer entries for an installed tree (uv's lock file and bytecode caches left out)."""
    entries: list[Entry] = []
    root = Path(os.path.realpath(target_dir))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(Path(dirpath, d))]):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel == ".lock":
                continue
            full = Path(dirpath, name)
            dest = f"{image_dir}/{rel}"
            if full.is_symlink():
                # A link out of the tree would dangle in the image: left out.
                resolved = Path(os.path.realpath(full))
                if resolved == root or root in resolved.parents:
                    entries.append(Entry.symlink(dest, os.path.relpath(resolved, full.parent)))
            elif full.is_file():
                entries.append(Entry.file(dest, full, file_mode(full.stat().st_mode)))
    return entries


def python_deps_layer(
    requirements: Sequence[str] | Path | Requirements,
    python_version: str,
    platform: Platform,
    layout: Layout,
    *,
    stat_cache: StatCache | None = None,
    binary_only: bool = True,
    watch: Callable[[GrowingBlob], None] | None = None,
    stop: threading.Event | None = None,
) -> Layer | None:
    """The layer of installed requirements (None if there are none), built once per inputs.

    ``watch`` hears of the layer's blob as it starts being written (not for a cached layer);
    once ``stop`` is set, the install or the layer's writing ends with BuildFailed.
    """
    reqs = requirements if isinstance(requirements, Requirements) else Requirements.of(requirements)
    if not reqs.significant:
        return None
    _check_python_version(python_version)
    key = None
    if stat_cache is not None and reqs.cacheable:
        key = (
            "pydeps-"
            + hashlib.sha256(
                canonical_json(
                    [
                        1,
                        list(reqs.significant),
                        python_version,
                        str(platform),
                        uv_version(uv_command()),
                        binary_only,
                    ]
                )
            ).hexdigest()
        )
        cached = stat_cache.get(key, layout)
        if cached is not None:
            return cached
    with tempfile.TemporaryDirectory(prefix="skiff-deps-") as tmp:
        entries = install_python_deps(
            reqs,
            python_version,
            platform,
            Path(tmp) / "site",
            binary_only=binary_only,
            stop=stop,
        )
        layer = build_layer(entries, layout, "gzip", watch=watch, stop=stop)
    if key is not None and stat_cache is not None:
        stat_cache.put(key, layer)
    return layer


# --- Cog's runtime (the SDK) ---------------------------------------------------------------------

# Cog drops these from the user's requirements: the SDK layer installs them, at the chosen version.
SDK_PACKAGES = ("cog", "coglet")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_SDK_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([a-z]+\d*|\.post\d+|\.dev\d+)*$")
# Cog's minimum SDK, and the first release whose server is coglet (released with the same number).
MIN_SDK_VERSION = (0, 16, 0)
FIRST_COGLET_SDK = (0, 17, 0)
# Where the image's ``python`` command lives: coglet starts its worker as a bare ``python``.
PYTHON_SHIM_DIR = "/opt/skiff/bin"
PYTHON_SHIM = b'#!/bin/sh\n# coglet runs its worker as "python": the image\'s python3.\n' + (
    b'exec python3 "$@"\n'
)


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares (``Typing_Extensions``: ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def without_sdk(requirements: Sequence[str] | Path) -> tuple[Requirements, list[str]]:
    """The user's requirements without ``cog``/``coglet`` lines (as Cog drops them), and a warning
    for each line dropped: the SDK layer installs Cog's runtime at the version the build chose."""
    reqs = Requirements.of(requirements)
    kept: list[str] = []
    warnings: list[str] = []
    for line in reqs.lines:
        match = _REQ_NAME.match(re.sub(r"(^|\s)#.*$", "", line))
        if match and normalize_name(match[1]) in SDK_PACKAGES:
            warnings.append(
                f"ignored the requirement {line.strip()!r}: the image gets Cog's runtime at the"
                " SDK version (build.sdk_version in cog.yaml, or --sdk-version)"
            )
            continue
        kept.append(line)
    return Requirements(tuple(kept), reqs.base_dir), warnings


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def check_sdk_version(version: str) -> None:
    """Refuses an SDK version uv could not mean, or one older than Cog itself accepts."""
    if not _SDK_VERSION.match(version):
        raise InvalidInput(
            f"invalid Cog SDK version {version!r}",
            "write a release of the cog package on PyPI, e.g. 0.23.1",
        )
    if _version_tuple(version) < MIN_SDK_VERSION:
        minimum = ".".join(map(str, MIN_SDK_VERSION))
        raise InvalidInput(
            f"Cog SDK {version} is too old: Cog builds images with {minimum} or newer",
            "set build.sdk_version (or --sdk-version) to a newer release",
        )


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class SdkLayer:
    """Cog's runtime as installed for the image: its layer, and what the image's site holds."""

    layer: Layer
    cog_version: str
    coglet_version: str | None
    freeze: tuple[str, ...]  # ``pip freeze`` of the user's packages and the SDK's, sorted

    def to_json(self) -> dict[str, object]:
        return {
            "layer": self.layer.to_json(),
            "cog_version": self.cog_version,
            "coglet_version": self.coglet_version,
            "freeze": list(self.freeze),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SdkLayer:
        return cls(
            Layer.from_json(value["layer"]),
            str(value["cog_version"]),
            value.get("coglet_version"),
            tuple(str(line) for line in value["freeze"]),
        )


def _metadata(text: str) -> Distribution | None:
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Version":
            version = value.strip()
    return Distribution(name, version) if name and version else None


def layer_distributions(layout: Layout, layer: Layer | None) -> list[Distribution]:
    """The distributions a dependencies layer installs, read from its ``METADATA`` files."""
    if layer is None:
        return []
    prefix = SITE_PACKAGES.lstrip("/") + "/"
    found: list[Distribution] = []
    # gzip.GzipFile, not tarfile's "r|gz": skiff's layers are several gzip members.
    with (
        layout.open_blob(layer.descriptor.digest) as blob,
        gzip.GzipFile(fileobj=blob, mode="rb") as unzipped,
        tarfile.open(fileobj=unzipped, mode="r|") as tar,
    ):
        for member in tar:
            rel = member.name.removeprefix("./").removeprefix(prefix)
            parts = rel.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                handle = tar.extractfile(member)
                if handle is not None:
                    dist = _metadata(handle.read().decode("utf-8", "replace"))
                    if dist is not None:
                        found.append(dist)
    return found


def _installed(target_dir: Path) -> dict[str, tuple[Distribution, Path]]:
    out: dict[str, tuple[Distribution, Path]] = {}
    for info in sorted(target_dir.glob("*.dist-info")):
        try:
            dist = _metadata((info / "METADATA").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if dist is not None:
            out[normalize_name(dist.name)] = (dist, info)
    return out


def _remove_distribution(target_dir: Path, info: Path) -> None:
    """Removes an installed distribution by its RECORD (only paths inside ``target_dir``)."""
    root = target_dir.resolve()
    with contextlib.suppress(OSError):
        for row in csv.reader(io.StringIO((info / "RECORD").read_text(encoding="utf-8"))):
            if not row:
                continue
            path = (target_dir / row[0]).resolve()
            if path.is_relative_to(root) and path.is_file():
                path.unlink()
    shutil.rmtree(info, ignore_errors=True)
    # Packages emptied by the removal (and their bytecode caches) go too.
    for dirpath, _dirnames, _files in sorted(os.walk(target_dir), reverse=True):
        here = Path(dirpath)
        if here == target_dir:
            continue
        leftover = [p for p in here.iterdir() if p.name != "__pycache__"]
        if not leftover:
            shutil.rmtree(here, ignore_errors=True)


def sdk_layer(
    sdk_version: str,
    python_version: str,
    platform: Platform,
    layout: Layout,
    deps: Layer | None,
    *,
    stat_cache: StatCache | None = None,
    stop: threading.Event | None = None,
) -> SdkLayer:
    """Cog's runtime (``cog`` and its ``coglet``) from PyPI, in a layer above the user's packages.

    uv resolves it with every package of the dependencies layer pinned as a constraint, so the
    SDK's own dependencies agree with the user's (a clash is a build error naming both), and
    the layer holds only what the user's layer lacks: changing the SDK never reinstalls torch.
    Cached by (SDK version, Python, platform, uv, the dependencies layer).
    """
    check_sdk_version(sdk_version)
    _check_python_version(python_version)
    uv = uv_command()
    key = (
        "sdk-"
        + hashlib.sha256(
            canonical_json(
                [
                    1,
                    sdk_version,
                    python_version,
                    str(platform),
                    uv_version(uv),
                    str(deps.descriptor.digest) if deps is not None else None,
                    PYTHON_SHIM.decode(),
                ]
            )
        ).hexdigest()
    )
    sidecar = stat_cache.root / f"{key}.json" if stat_cache is not None else None
    if sidecar is not None:
        with contextlib.suppress(Exception):  # missing or damaged: built again
            cached = SdkLayer.from_json(json.loads(sidecar.read_bytes()))
            if layout.has(cached.layer.descriptor.digest, cached.layer.descriptor.size):
                return cached
    user = layer_distributions(layout, deps)
    requirements = [f"cog=={sdk_version}"]
    if _version_tuple(sdk_version) >= FIRST_COGLET_SDK:
        # coglet is released with cog under the same number: the pair the SDK was tested with.
        requirements.append(f"coglet=={sdk_version}")
    with tempfile.TemporaryDirectory(prefix="skiff-sdk-") as tmp:
        target = Path(tmp) / "site"
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{d.pin}\n" for d in user), encoding="utf-8")
        args = [
            *uv,
            "pip",
            "install",
            "--target",
            str(target),
            "--python",
            sys.executable,
            "--python-platform",
            python_platform(platform),
            "--python-version",
            python_version,
            "--only-binary",
            ":all:",
            "--no-progress",
            "-c",
            str(constraints),
            *requirements,
        ]
        done = _run_stoppable(args, stop)
        if done.returncode != 0:
            raise BuildFailed(
                f"uv could not install Cog's runtime (cog {sdk_version}) for {platform},"
                f" Python {python_version}",
                f"{_stderr_tail(done.stderr)}\nthe SDK is resolved together with the model's"
                " packages: a clash means a package pinned in cog.yaml conflicts with cog's"
                " dependencies; or choose another build.sdk_version",
            )
        installed = _installed(target)
        shared = {normalize_name(d.name) for d in user}
        for name in shared & installed.keys():
            _remove_distribution(target, installed[name][1])
        _fix_scripts(target)
        entries = site_entries(target)
        entries.append(Entry.file(f"{PYTHON_SHIM_DIR}/python", PYTHON_SHIM, 0o755))
        layer = build_layer(entries, layout, "gzip", stop=stop)
    cog = installed.get("cog")
    if cog is None:
        raise BuildFailed(f"uv installed no cog package for cog=={sdk_version}")
    coglet = installed.get("coglet")
    everything = {normalize_name(d.name): d for d in user}
    everything.update({name: dist for name, (dist, _) in installed.items()})
    freeze = tuple(sorted((d.pin for d in everything.values()), key=str.lower))
    result = SdkLayer(layer, cog[0].version, coglet[0].version if coglet else None, freeze)
    if sidecar is not None:
        with contextlib.suppress(OSError):
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(sidecar, canonical_json(result.to_json()))
    return result
