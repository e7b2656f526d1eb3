"""The daemonless builder: cog.yaml + model folder -> an OCI image in the build cache.

Layers, bottom to top, ordered so that what changes least sits lowest: the base image, one layer
per build step (system packages, then each ``run`` command; see ``steps.py``), skiff's Cog runtime,
the Python dependencies, the weights (uncompressed, one or more layers), the code.
They are built in another order — runtime, weights (side by side) and code while uv installs
the dependencies in a second thread — and each is announced through ``on_layer`` as soon as it is
in the cache, so a push can upload it while the rest is still being built; large ones are also
announced through ``on_layer_started`` as they start, so a push can stream them as they grow.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skiff import __version__
from skiff import config as cogconfig
from skiff.errors import BuildFailed, SkiffError
from skiff.image.base import BaseImage, default_base, pull_base
from skiff.image.gpu import gpu_base
from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import GrowingBlob, Layout, default_layout
from skiff.image.oci import Descriptor, ImageConfig, Manifest
from skiff.image.options import BuildOptions
from skiff.image.pydeps import SITE_PACKAGES, python_deps_layer
from skiff.image.sourcetree import plan_source_layers
from skiff.image.steps import (
    Sandbox,
    Step,
    StepResult,
    StepRunner,
    check_secrets,
    plan_steps,
    step_env,
)
from skiff.runtime import runtime_dir, schema_for_build

RUNTIME_PATH = "/opt/skiff/python"
# Weights layers built at once: as many as a push uploads at once.
WEIGHTS_PARALLEL = 3
# How long a failed or interrupted build lets the dependency install clean up after itself.
DEPS_CLEANUP_SECONDS = 0.5
# How often a build waiting for its dependencies asks whether to stop.
STOP_POLL_SECONDS = 0.1
CODE_ROOT = "/src"


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
        plan = plan_source_layers(self.folder)
        warnings = [
            f"{path} looks like a secret and will be in the image; add it to .dockerignore"
            for path in plan.secret_like
        ]
        warnings += [f"left out {s.path}: {s.reason}" for s in plan.skipped]
        steps = plan_steps(cfg.build)
        check_secrets(steps, self.options.secrets)
        if steps:
            Sandbox.find()  # no sandbox here: say so before preflight waits and the base is pulled
        chosen_base = self.options.base_image or os.environ.get("SKIFF_BASE_IMAGE")
        if cfg.build.gpu and not chosen_base:
            # Before any work: an impossible CUDA/Python combination is the user's to fix.
            chosen_base = gpu_base(
                cfg.build.cuda, cfg.build.cudnn, cfg.build.python_version
            ).reference
        layout = self._layout or default_layout()
        stat_cache = StatCache(layout.root.parent / "stat-cache")
        platform = self.options.platform

        self.status("resolving the base image")
        base_text = chosen_base or default_base(cfg.build.python_version)
        base = pull_base(base_text, platform, layout, refresh=self.options.refresh_base)
        self.base = base
        for descriptor in base.layers:
            self.on_layer(BuiltLayer(descriptor, "base"))

        # Dependencies install beside the other layers (uv waits on the network, the others on
        # the disk). A failure or Ctrl-C elsewhere stops them (uv is ended, the layer's writing
        # stops at its next read) and is not held up waiting for them.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-deps")
        stop_deps = threading.Event()
        try:
            deps_future = pool.submit(self._deps_layer, cfg, layout, stat_cache, stop_deps)
            step_layers = self._step_layers(steps, cfg, base, layout, stat_cache)
            runtime = self._layer(_runtime_entries(), layout, stat_cache, "gzip", "runtime")
            weights = self._weights_layers(plan.weights, layout, stat_cache)
            code = self._layer(plan.code, layout, stat_cache, "gzip", "code")
            while not wait([deps_future], timeout=STOP_POLL_SECONDS).done:
                self.check_stop()
            deps = _result(deps_future)
        except BaseException:
            stop_deps.set()
            # The install ends uv and removes its temporary files within moments: let it (bounded)
            # so that an interrupted build leaves nothing behind, in the model folder above all.
            wait([deps_future], timeout=DEPS_CLEANUP_SECONDS)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if deps is not None:
            self.on_layer(BuiltLayer(deps.descriptor, "deps"))

        ordered: list[tuple[Layer, str]] = [*step_layers, (runtime, "runtime")]
        if deps is not None:
            ordered.append((deps, "deps"))
        ordered += [(w, "weights") for w in weights]
        if plan.code:
            ordered.append((code, "code"))

        image_config = self._image_config(cfg, base, [layer for layer, _ in ordered])
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
            entries, layout, compression, stat_cache=stat_cache,
            watch=self._watch(role) if role == "weights" else None, stop=stop,
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
        cfg: cogconfig.Config,
        base: BaseImage,
        layout: Layout,
        stat_cache: StatCache,
    ) -> list[tuple[Layer, str]]:
        if not steps:
            return []
        runner = StepRunner(
            layout,
            stat_cache,
            base.layers,
            env=step_env(base.config.env_map, cfg.environment_vars),
            secrets=self.options.secrets,
            work_dir=layout.root.parent / "rootfs",
            on_status=self.status,
        )

        def announce(result: StepResult) -> None:
            self.on_layer(BuiltLayer(result.layer.descriptor, result.step.role))

        return [(r.layer, r.step.role) for r in runner.run(steps, announce)]

    def _deps_layer(
        self, cfg: cogconfig.Config, layout: Layout, stat_cache: StatCache, stop: threading.Event
    ) -> Layer | None:
        requirements: list[str] | Path
        if cfg.build.python_requirements:
            requirements = cfg.root / cfg.build.python_requirements
        else:
            requirements = list(cfg.build.python_packages)
        return python_deps_layer(
            requirements,
            cfg.build.python_version,
            self.options.platform,
            layout,
            stat_cache=stat_cache,
            watch=self._watch("deps"),
            stop=stop,
        )

    def _watch(self, role: str) -> Callable[[GrowingBlob], None] | None:
        started = self.on_layer_started
        if started is None:
            return None
        return lambda blob: started(blob, role)

    def _image_config(
        self, cfg: cogconfig.Config, base: BaseImage, layers: list[Layer]
    ) -> ImageConfig:
        env = {
            "PYTHONPATH": f"{RUNTIME_PATH}:{SITE_PACKAGES}",
            "PYTHONUNBUFFERED": "1",
            "COG_MAX_CONCURRENCY": str(cfg.concurrency.max if cfg.concurrency else 1),
        }
        if cfg.predict:
            env["COG_PREDICTOR"] = cfg.predict
        env.update(cfg.environment_vars)
        # Nothing from the host (not even the folder's name): a checkout anywhere gives the
        # same image digest.
        labels = {
            "run.cog.config": json.dumps(_raw_yaml(cfg.root), sort_keys=True),
            "run.cog.version": __version__,
        }
        schema = _openapi_schema(cfg.root, cfg.predict)
        if schema is not None:
            labels["run.cog.openapi_schema"] = schema
        return (
            base.config.with_env(env)
            .with_labels(labels)
            .with_run(cmd=["python3", "-m", "cog.server.http"], working_dir=CODE_ROOT)
            .with_layers((layer.diff_id for layer in layers), f"skiff build {__version__}")
        )


def _result(future: Future[Layer | None]) -> Layer | None:
    return future.result()


def _runtime_entries() -> list[Entry]:
    """skiff's ``cog`` package, as it will be imported inside the image."""
    root = runtime_dir()
    entries: list[Entry] = []
    for path in sorted((root / "cog").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        entries.append(Entry.file(f"{RUNTIME_PATH}/{rel}", path.read_bytes(), 0o644))
    return entries


def _raw_yaml(folder: Path) -> Any:
    try:
        return yaml.safe_load((folder / "cog.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _openapi_schema(folder: Path, predictor: str | None) -> str | None:
    """Cog's schema label: read from the predictor's source where possible (no dependencies
    needed), else by importing it here. When neither works (imports of heavy dependencies built
    for another platform), the label is left out and the server computes the schema at start-up.
    """
    try:
        schema = schema_for_build(folder, predictor)
    except SkiffError:
        return None
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


__all__ = ["BuildFailed", "BuildOptions", "Builder", "BuiltImage", "BuiltLayer"]
