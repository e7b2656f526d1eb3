"""Running a built or pushed image without a daemon: unpacked once, started under bubblewrap.

``skiff predict IMAGE`` does what ``cog predict IMAGE`` does with Docker: the image comes from
skiff's cache by the name ``skiff build -t`` gave it, else from its registry (skiff's own
client, any auth), and its root filesystem is unpacked once into the cache under the manifest's
digest. It runs with its own config (Env, WorkingDir, Entrypoint and Cmd) in a sandbox: the
image as its root, read-only except ``/tmp`` (nothing of a run is kept, as with ``docker run
--rm``), the host's network and process ids (see ``bwrap_argv``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform as host
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.errors import BuildFailed, InvalidInput, SkiffError
from skiff.image.oci import INDEX_TYPES, ImageConfig, Index, Manifest, Platform

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_COMPLETE = ".skiff-complete"
_SERVER_MODULE = "cog.server.http"


@dataclass(frozen=True)
class Unpacked:
    """An image ready to run: its root filesystem and its config."""

    name: str
    digest: str
    rootfs: Path
    config: ImageConfig

    @property
    def schema(self) -> dict[str, Any] | None:
        """The schema the image was built with (label, else ``WorkingDir/.cog``), if any."""
        label = (self.config.labels or {}).get("run.cog.openapi_schema")
        texts = [label] if label else []
        workdir = (self.config.working_dir or "/src").lstrip("/")
        with contextlib.suppress(OSError):
            texts.append((self.rootfs / workdir / ".cog" / "openapi_schema.json").read_text())
        for text in texts:
            with contextlib.suppress(ValueError):
                schema = json.loads(text)
                if isinstance(schema, dict):
                    return schema
        return None


def host_platform() -> Platform:
    machine = host.machine().lower()
    if machine not in _MACHINES:
        raise InvalidInput(f"cannot run images on this machine's architecture ({machine})")
    return Platform("linux", _MACHINES[machine])


def prepare(name: str, cache: Path) -> Unpacked:
    """The image ``name`` (a cache tag or a registry reference), unpacked into the cache."""
    from skiff.image.layout import default_layout

    layout = default_layout()
    platform = host_platform()
    manifest = _local_manifest(layout, name, platform)
    if manifest is None:
        manifest = _pull(name, platform, layout)
    config = ImageConfig.from_bytes(layout.read_bytes(manifest.config.digest))
    digest = hashlib.sha256(manifest.to_bytes()).hexdigest()
    root = cache / "run" / "rootfs" / digest
    if not (root / _COMPLETE).exists():
        _unpack(layout, manifest, root)
    return Unpacked(name, f"sha256:{digest}", root / "root", config)


def _local_manifest(layout: Any, name: str, platform: Platform) -> Manifest | None:
    descriptor = layout.resolve(name)
    if descriptor is None or not layout.has(descriptor.digest):
        return None
    data = layout.read_bytes(descriptor.digest)
    if descriptor.media_type in INDEX_TYPES:
        chosen = Index.from_bytes(data).select(platform)
        data = layout.read_bytes(chosen.digest)
    return Manifest.from_bytes(data)


def _pull(name: str, platform: Platform, layout: Any) -> Manifest:
    from skiff import reference as refs
    from skiff.image.base import pull_base

    try:
        refs.parse(name)
    except refs.ReferenceError as exc:
        raise InvalidInput(
            f"{name!r} is neither an image in skiff's cache nor an image reference: {exc.message}",
            "give a name from `skiff build -t NAME`, or a reference such as "
            "registry.example.com/me/model:v1",
        ) from exc
    try:
        # The registry client of skiff's builds: any registry, Docker's credentials.
        return pull_base(name, platform, layout).manifest
    except SkiffError as exc:
        raise BuildFailed(
            exc.message.replace("the base image ", ""),
            "check the reference and that you can pull it (skiff login HOST)",
        ) from exc


def _unpack(layout: Any, manifest: Manifest, root: Path) -> None:
    from skiff.image.rootfs import unpack_layers

    root.parent.mkdir(parents=True, exist_ok=True)
    # Unpacked beside its final place and renamed at the end: an interrupted unpack is never
    # taken for a complete one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        unpack_layers(layout, manifest.layers, tmp / "root")
        (tmp / _COMPLETE).write_text("")
        try:
            tmp.rename(root)
        except OSError:
            if not (root / _COMPLETE).exists():  # not another skiff's finished copy
                raise
    except OSError as exc:
        raise BuildFailed(
            f"cannot unpack the image into the cache {root.parent}: {exc}",
            "check the free disk space and permissions, or set SKIFF_CACHE_DIR",
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def command(config: ImageConfig) -> list[str]:
    argv = [*(config.entrypoint or ()), *(config.cmd or ())]
    if not argv:
        raise InvalidInput("the image has neither Entrypoint nor Cmd: there is nothing to run")
    return argv


def bwrap_argv(image: Unpacked, port: int, host_address: str) -> list[str]:
    """The sandbox command for the image's own process, listening on ``host_address:port``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise BuildFailed(
            "bubblewrap (bwrap) is needed to run an image, and it was not found",
            "install it (apt-get install bubblewrap) and try again",
        )
    argv = [bwrap, "--ro-bind", str(image.rootfs), "/", "--dev", "/dev", "--proc", "/proc"]
    # No pid namespace of its own: coglet names its worker sockets after its pid in the abstract
    # namespace, which belongs to the (host's) network namespace, so every sandbox's coglet would
    # be pid 2 and a second model running on the machine would fail with "Address in use".
    argv += ["--tmpfs", "/tmp", "--die-with-parent", "--clearenv"]
    env = image.config.env_map
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOME", "/root")
    env["PORT"] = str(port)
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", image.config.working_dir or "/", "--", *command(image.config)]
    if _SERVER_MODULE in argv:
        # Cog's server listens on 0.0.0.0 unless told otherwise (the host's network is shared).
        argv += ["--host", host_address]
    return argv
