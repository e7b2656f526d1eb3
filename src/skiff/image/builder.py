"""The daemonless builder: cog.yaml + model folder -> an OCI image in the build cache.

Layers, bottom to top, in Cog's order: the base image, the system packages (and ``pre_install``),
the user's Python packages, Cog's runtime (``cog`` and ``coglet`` from PyPI, the SDK: above the
user's packages, so that a new SDK never reinstalls torch), one layer per ``build.run`` command
(they see all of the above: a step may import a package), the weights (uncompressed, one or more
layers), the code with ``.cog/openapi_schema.json``. The image config is Cog's contract (see
``_image_config``). Weights and code are built while uv installs the packages in a second thread,
and each layer is announced through ``on_layer`` as soon as it is in the cache, so a push can
upload it while the rest is still being built; large ones are also announced through
``on_layer_started`` as they start, so a push can stream them as they grow.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff import __version__, cogschema
from skiff import config as cogconfig
from skiff.errors import BuildFailed, SkiffError
from skiff.image.base import BaseImage, default_base, pull_base
from skiff.image.gpu import gpu_base
from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import GrowingBlob, Layout, default_layout
from skiff.image.oci import Descriptor, ImageConfig, Manifest
from skiff.image.options import DEFAULT_SDK_VERSION, BuildOptions
from skiff.image.pydeps import (
    PYTHON_SHIM_DIR,
    SITE_PACKAGES,
    Requirements,
    SdkLayer,
    check_sdk_version,
    python_deps_layer,
    sdk_layer,
    without_sdk,
)
from skiff.image.sourcetree import plan_source_layers
from skiff.image.steps import (
    DEFAULT_PATH,
    Sandbox,
    Step,
    StepResult,
    StepRunner,
    check_secrets,
    plan_steps,
    step_env,
)

# Weights layers built at once: as many as a push uploads at once.
WEIGHTS_PARALLEL = 3
# How long a failed or interrupted build lets the dependency install clean up after itself.
DEPS_CLEANUP_SECONDS = 0.5
# How often a build waiting for its dependencies asks whether to stop.
STOP_POLL_SECONDS = 0.1
CODE_ROOT = "/src"
# Where coglet reads the schema (relative to its working directory, /src), as `cog build` writes it.
SCHEMA_PATH = f"{CODE_ROOT}/.cog/openapi_schema.json"
COG_PORT = "5000/tcp"
GIT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class BuiltLayer:
    """A layer of the image and the part of the model it holds."""

    descriptor: Descriptor
    role: str  # base | system | run | runtime | deps | weights | code


@dataclass
class BuiltImage:
    manifest: Manifest
    manifest_descriptor: Descriptor
    config_descriptor: Descriptor
    layers: list[BuiltLayer]
    base: BaseImage
    warnings: list[str] = field(default_factory=list)


LayerCallback = Callable[[BuiltLayer], None]
# Hears of a large layer (weights, dependencies) as soon as its blob starts being written.
GrowingCallback = Callable[[GrowingBlob, str], None]


class Builder:
    """Builds one model folder. ``on_layer`` hears of each finished layer, and
    ``on_layer_started`` of each weights or dependencies layer as it starts being written (a
    push uploads them from there); ``check_stop`` is called while the build waits for its
    dependencies, and raises to stop it (a push the registry refused). Mistakes in the model
    folder are found before anything is written to the cache."""

    def __init__(
        self,
        folder: Path,
        options: BuildOptions | None = None,
        *,
        layout: Layout | None = None,
        on_layer: LayerCallback | None = None,
        on_status: Callable[[str], None] | None = None,
        on_layer_started: GrowingCallback | None = None,
        check_stop: Callable[[], None] | None = None,
    ) -> None:
        self.folder = folder
        self.on_layer_started = on_layer_started
        self.check_stop = check_stop or (lambda: None)
        self.options = options or BuildOptions()
        self._layout = layout
        self.on_layer = on_layer or (lambda _layer: None)
        self.status = on_status or (lambda _text: None)
        # Set as soon as the base is resolved, before its layers are announced: a push mounts
        # them from the base's repository when it lives in the destination's registry.
        self.base: BaseImage | None = None

    def build(self) -> BuiltImage:
        cfg = cogconfig.load(self.folder)
        cogconfig.check_local(cfg)
        sdk_version = self.options.sdk_version or cfg.build.sdk_version or DEFAULT_SDK_VERSION
        check_sdk_version(sdk_version)
        requirements, warnings = self._requirements(cfg)
        plan = plan_source_layers(self.folder)
        warnings += [
            f"{path} looks like a secret and will be in the image; add it to .dockerignore"
            for path in plan.secret_like
        ]
        warnings += [f"left out {s.path}: {s.reason}" for s in plan.skipped]
        steps = plan_steps(cfg.build)
        check_secrets(steps, self.options.secrets)
        # Cog's order: system packages (and pre_install) before the Python packages, build.run
        # after them and the SDK.
        split = sum(1 for step in steps if step.role == "system") + len(cfg.build.pre_install)
        early_steps, late_steps = steps[:split], steps[split:]
        if steps:
            Sandbox.find()  # no sandbox here: say so before preflight waits and the base is pulled
        # Before any work: the schema is computed from the source, and a predictor it cannot
        # describe is the user's to fix.
        schema = openapi_schema(cfg.root, _predict_ref(cfg), cfg.train, sdk_version)
        chosen_base = self.options.base_image or os.environ.get("SKIFF_BASE_IMAGE")
        if cfg.build.gpu and not chosen_base:
            # Before any work: an impossible CUDA/Python combination is the user's to fix.
            chosen_base = gpu_base(
                cfg.build.cuda, cfg.build.cudnn, cfg.build.python_version
            ).reference
        layout = self._layout or default_layout()
        stat_cache = StatCache(layout.root.parent / "stat-cache")

        self.status("resolving the base image")
        base_text = chosen_base or default_base(cfg.build.python_version)
        platform = self.options.platform
        base = pull_base(base_text, platform, layout, refresh=self.options.refresh_base)
        self.base = base
        for descriptor in base.layers:
            self.on_layer(BuiltLayer(descriptor, "base"))
        env = _run_env(cfg, base)

        # The Python packages, then the SDK over them, install beside the other layers (uv waits
        # on the network, the others on the disk). A failure or Ctrl-C elsewhere stops them (uv
        # is ended, the layer's writing stops at its next read) and is not held up waiting.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-deps")
        stop_deps = threading.Event()
        try:
            deps_future = pool.submit(
                self._python_layers, cfg, requirements, sdk_version, layout, stat_cache, stop_deps
            )
            step_layers = self._step_layers(
                early_steps, cfg.environment_vars, base, base.layers, layout, stat_cache
            )
            weights = self._weights_layers(plan.weights, layout, stat_cache)
            code_entries = [e for e in plan.code if e.path != SCHEMA_PATH]
            code_entries.append(Entry.file(SCHEMA_PATH, _schema_bytes(schema) + b"\n", 0o644))
            code = self._layer(code_entries, layout, stat_cache, "gzip", "code")
            while not wait([deps_future], timeout=STOP_POLL_SECONDS).done:
                self.check_stop()
            deps, sdk = deps_future.result()
        except BaseException:
            stop_deps.set()
            # The install ends uv and removes its temporary files within moments: let it (bounded)
            # so that an interrupted build leaves nothing behind, in the model folder above all.
            wait([deps_future], timeout=DEPS_CLEANUP_SECONDS)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

        ordered: list[tuple[Layer, str]] = list(step_layers)
        if deps is not None:
            ordered.append((deps, "deps"))
        ordered.append((sdk.layer, "runtime"))
        below = [*base.layers, *(layer.descriptor for layer, _ in ordered)]
        ordered += self._step_layers(late_steps, env, base, below, layout, stat_cache)
        ordered += [(w, "weights") for w in weights]
        ordered.append((code, "code"))

        image_config = self._image_config(cfg, base, env, sdk, schema, [lay for lay, _ in ordered])
        config_desc = layout.write_json(
            "application/vnd.oci.image.config.v1+json", image_config.to_bytes()
        )
        manifest = Manifest(
            config=config_desc,
            layers=(*base.layers, *(layer.descriptor for layer, _ in ordered)),
        )
        manifest_desc = layout.write_json(manifest.media_type, manifest.to_bytes())
        if self.options.tag:
            layout.tag(self.options.tag, manifest_desc)
        layers = [BuiltLayer(d, "base") for d in base.layers] + [
            BuiltLayer(layer.descriptor, role) for layer, role in ordered
        ]
        return BuiltImage(manifest, manifest_desc, config_desc, layers, base, warnings)

    def _requirements(self, cfg: cogconfig.Config) -> tuple[Requirements, list[str]]:
        """The user's requirements without the SDK's packages (dropped with a warning, as Cog)."""
        if cfg.build.python_requirements:
            return without_sdk(cfg.root / cfg.build.python_requirements)
        return without_sdk(list(cfg.build.python_packages))

    def _layer(
        self,
        entries: list[Entry],
        layout: Layout,
        stat_cache: StatCache,
        compression: Any,
        role: str,
        stop: threading.Event | None = None,
    ) -> Layer:
        self.status(f"building the {role} layer")
        layer = build_layer(
            entries,
            layout,
            compression,
            stat_cache=stat_cache,
            watch=self._watch(role) if role == "weights" else None,
            stop=stop,
        )
        if entries:
            self.on_layer(BuiltLayer(layer.descriptor, role))
        return layer

    def _weights_layers(
        self, groups: list[list[Entry]], layout: Layout, stat_cache: StatCache
    ) -> list[Layer]:
        """Weights layers, built side by side: each is disk writes and hashing, which run
        outside the interpreter lock, and a push streams them all at once rather than waiting
        for one layer before it starts the next (one connection carries only so much)."""
        if len(groups) <= 1:
            return [self._layer(group, layout, stat_cache, "none", "weights") for group in groups]
        pool = ThreadPoolExecutor(
            max_workers=min(len(groups), WEIGHTS_PARALLEL), thread_name_prefix="skiff-weights"
        )
        stop = threading.Event()
        futures = [
            pool.submit(self._layer, group, layout, stat_cache, "none", "weights", stop)
            for group in groups
        ]
        try:
            # The first failure stops the others at once, even one built before it in order.
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            if failed is not None:
                failed.result()  # raises its exception
            return [future.result() for future in futures]
        except BaseException:
            # A failure or Ctrl-C: layers not started are dropped, the ones being written stop
            # at their next read, and none is waited for (an interrupted command exits at once).
            stop.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _step_layers(
        self,
        steps: list[Step],
        extra_env: Mapping[str, str],
        base: BaseImage,
        below: Sequence[Descriptor],
        layout: Layout,
        stat_cache: StatCache,
    ) -> list[tuple[Layer, str]]:
        """Runs ``steps`` over the layers ``below`` them (the base, or everything up to the SDK)."""
        if not steps:
            return []
        runner = StepRunner(
            layout,
            stat_cache,
            below,
            env=step_env(base.config.env_map, extra_env),
            secrets=self.options.secrets,
            work_dir=layout.root.parent / "rootfs",
            on_status=self.status,
        )

        def announce(result: StepResult) -> None:
            self.on_layer(BuiltLayer(result.layer.descriptor, result.step.role))

        return [(r.layer, r.step.role) for r in runner.run(steps, announce)]

    def _python_layers(
        self,
        cfg: cogconfig.Config,
        requirements: Requirements,
        sdk_version: str,
        layout: Layout,
        stat_cache: StatCache,
        stop: threading.Event,
    ) -> tuple[Layer | None, SdkLayer]:
        """The user's packages, then Cog's runtime resolved against them."""
        deps = python_deps_layer(
            requirements,
            cfg.build.python_version,
            self.options.platform,
            layout,
            stat_cache=stat_cache,
            watch=self._watch("deps"),
            stop=stop,
        )
        if deps is not None:
            self.on_layer(BuiltLayer(deps.descriptor, "deps"))
        self.status(f"installing Cog's runtime (cog {sdk_version})")
        sdk = sdk_layer(
            sdk_version,
            cfg.build.python_version,
            self.options.platform,
            layout,
            deps,
            stat_cache=stat_cache,
            stop=stop,
        )
        self.on_layer(BuiltLayer(sdk.layer.descriptor, "runtime"))
        return deps, sdk

    def _watch(self, role: str) -> Callable[[GrowingBlob], None] | None:
        started = self.on_layer_started
        if started is None:
            return None
        return lambda blob: started(blob, role)

    def _image_config(
        self,
        cfg: cogconfig.Config,
        base: BaseImage,
        env: Mapping[str, str],
        sdk: SdkLayer,
        schema: dict[str, Any],
        layers: list[Layer],
    ) -> ImageConfig:
        """Cog's image contract, as `cog build` writes it: the runtime's Env, WorkingDir /src,
        port 5000, Cmd ``python -m cog.server.http``, and the labels Replicate reads."""
        labels = {
            "run.cog.config": json.dumps(_completed_config(cfg, sdk.cog_version), sort_keys=True),
            "run.cog.version": sdk.cog_version,
            "run.cog.openapi_schema": _schema_bytes(schema).decode(),
            "run.cog.pip_freeze": "\n".join(sdk.freeze),
            "run.cog.has_init": "true",
            **_git_labels(cfg.root),
        }
        return (
            base.config.with_env(env)
            .with_labels(labels)
            .with_exposed_port(COG_PORT)
            .with_run(cmd=["python", "-m", "cog.server.http"], working_dir=CODE_ROOT)
            .with_layers((layer.diff_id for layer in layers), f"skiff build {__version__}")
        )


def _run_env(cfg: cogconfig.Config, base: BaseImage) -> dict[str, str]:
    """What the image adds to its base's Env (and what build.run steps see): ``python`` and the
    packages first on the paths, and the variables Cog's runtime reads."""
    base_path = base.config.env_map.get("PATH") or DEFAULT_PATH
    env = {
        "PATH": f"{PYTHON_SHIM_DIR}:{SITE_PACKAGES}/bin:{base_path}",
        "PYTHONPATH": SITE_PACKAGES,
        "PYTHONUNBUFFERED": "1",
        "COG_PREDICT_TYPE_STUB": _predict_ref(cfg),
    }
    if cfg.train:
        env["COG_TRAIN_TYPE_STUB"] = cfg.train
    concurrency = cfg.concurrency.max if cfg.concurrency else _declared_concurrency(cfg)
    if concurrency is not None:
        env["COG_MAX_CONCURRENCY"] = str(concurrency)
    env.update(cfg.environment_vars)
    return env


def _predict_ref(cfg: cogconfig.Config) -> str:
    if cfg.predict is None:  # check_local has refused it already; this keeps mypy honest
        raise BuildFailed("cog.yaml names no predictor (run: or predict:)")
    return cfg.predict


def openapi_schema(
    folder: Path, predict_ref: str, train_ref: str | None, sdk_version: str
) -> dict[str, Any]:
    """The model's OpenAPI schema, computed without running it, as `cog build` writes it to
    ``.cog/openapi_schema.json`` (coglet validates inputs with it and serves it); its
    ``info.version`` names the SDK the image carries. The one place the builder asks for it."""
    try:
        return cogschema.generate(folder, predict_ref, train_ref, version=sdk_version)
    except SkiffError as exc:
        raise BuildFailed(
            f"cannot compute the model's OpenAPI schema: {exc.message}",
            exc.hint or "Cog's runtime needs it to validate inputs; check the predictor's types",
        ) from exc


def _schema_bytes(schema: dict[str, Any]) -> bytes:
    # In the generator's order (not sorted): properties stay in the predictor's order, as Cog's.
    return json.dumps(schema, separators=(",", ":")).encode()


def _declared_concurrency(cfg: cogconfig.Config) -> int | None:
    """``@cog.concurrent(max=N)`` on the predictor, read from its source (never imported)."""
    file, _, name = _predict_ref(cfg).partition(":")
    try:
        tree = ast.parse((cfg.root / file).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name != name and not (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name in ("predict", "run")
        ):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            func = decorator.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called != "concurrent":
                continue
            for keyword in decorator.keywords:
                value = keyword.value
                if (
                    keyword.arg == "max"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, int)
                    and not isinstance(value.value, bool)
                ):
                    return value.value
    return None


def _completed_config(cfg: cogconfig.Config, cog_version: str) -> dict[str, Any]:
    """cog.yaml with its defaults filled in (label ``run.cog.config``)."""
    build: dict[str, Any] = {
        "python_version": cfg.build.python_version,
        "gpu": cfg.build.gpu,
        "sdk_version": cog_version,
    }
    for name in ("python_requirements", "cuda", "cudnn"):
        value = getattr(cfg.build, name)
        if value:
            build[name] = value
    for name in ("python_packages", "system_packages", "pre_install"):
        value = getattr(cfg.build, name)
        if value:
            build[name] = list(value)
    if cfg.build.run:
        build["run"] = [
            {
                "command": step.command,
                **({"mounts": [m.model_dump() for m in step.mounts]} if step.mounts else {}),
            }
            for step in cfg.build.run
        ]
    out: dict[str, Any] = {"build": build, "predict": cfg.predict}
    for name in ("train", "image"):
        value = getattr(cfg, name)
        if value:
            out[name] = value
    if cfg.concurrency is not None:
        out["concurrency"] = cfg.concurrency.model_dump(exclude_none=True)
    if cfg.environment:
        out["environment"] = list(cfg.environment)
    return out


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _git_labels(folder: Path) -> dict[str, str]:
    """The commit (and its tag, when it has one) of a model folder in a git repository: from the
    repository's content, so the same checkout gives the same image anywhere."""
    revision = _git(folder, "rev-parse", "HEAD")
    if revision is None:
        return {}
    labels = {"org.opencontainers.image.revision": revision}
    tag = _git(folder, "describe", "--tags", "--exact-match", "HEAD")
    if tag is not None:
        labels["org.opencontainers.image.version"] = tag
    return labels


__all__ = ["BuildFailed", "BuildOptions", "Builder", "BuiltImage", "BuiltLayer"]
