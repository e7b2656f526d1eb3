"""A Debian base image with Python 3, made with debootstrap and cached between test runs.

The e2e tests need a real base image to build on and to run; there is no Docker Hub here, so
one is made from Debian's packages (`debootstrap --variant=minbase`, with python3 and the CA
certificates every real base has: coglet's webhook client does not start without them), packed as
an OCI image layout with a single gzip layer, and kept under CACHE_ROOT (override with
SKIFF_TEST_CACHE) keyed by BASE_VERSION: the ~1.5 min it takes is paid once per machine. The
layout is built in a temporary directory beside its final place and renamed there, under a file
lock, so concurrent or interrupted runs never see half an image.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .registries import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, TinyImage

# Bump when the recipe below changes: a new key means a new image, the old one is left alone.
BASE_VERSION = "debian-bookworm-python3-v2"
SUITE = "bookworm"
_PACKAGES = "python3,ca-certificates"
MIRROR = "http://deb.debian.org/debian"
CACHE_ROOT = Path(os.environ.get("SKIFF_TEST_CACHE", "/var/cache/skiff-tests"))
TAG = "latest"
DEBOOTSTRAP_TIMEOUT = 900
# Package caches and docs: half the size of the rootfs, no use in a test image.
_TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
]


class BaseImageError(RuntimeError):
    """The base image could not be made (no debootstrap, no network to the Debian mirror...)."""


def python_base_layout(cache_root: Path = CACHE_ROOT) -> TinyImage:
    """The cached OCI layout of the Python base image, made first if this machine lacks it."""
    final = cache_root / BASE_VERSION
    cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(cache_root / f"{BASE_VERSION}.lock"):
        image = _load(final)
        if image is not None:
            return image
        shutil.rmtree(final, ignore_errors=True)  # incomplete: made by hand or damaged
        # Scratch directories of killed runs: no one else builds while we hold the lock.
        for stale in cache_root.glob(f".{BASE_VERSION}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{BASE_VERSION}-", dir=cache_root))
        try:
            _debootstrap(scratch / "rootfs", scratch / "debootstrap.log")
            _pack(scratch / "rootfs", scratch / "layout")
            (scratch / "layout").rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    image = _load(final)
    if image is None:
        raise BaseImageError(f"the base image layout at {final} is incomplete after building it")
    return image


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(layout: Path) -> TinyImage | None:
    """The image in `layout` if its index, manifest and blobs are all there, else None."""
    try:
        index = json.loads((layout / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"]
        manifest = _blob_path(layout, manifest_digest).read_bytes()
        parsed = json.loads(manifest)
        config_digest = parsed["config"]["digest"]
        layer = parsed["layers"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    for digest, size in (
        (config_digest, parsed["config"]["size"]),
        (layer["digest"], layer["size"]),
    ):
        path = _blob_path(layout, digest)
        if not path.is_file() or path.stat().st_size != size:
            return None
    return TinyImage(layout, manifest, manifest_digest, config_digest, layer["digest"])


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _debootstrap(rootfs: Path, log: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise BaseImageError(
            "debootstrap is not installed: the e2e base image is made with it "
            "(`make system-deps`, or `apt-get install debootstrap`)"
        )
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={_PACKAGES}",
        SUITE,
        str(rootfs),
        MIRROR,
    ]
    with log.open("wb") as out:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEBOOTSTRAP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            result = None
    if result is None or result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        outcome = "timed out" if result is None else f"exited {result.returncode}"
        raise BaseImageError(
            f"debootstrap {outcome} making the e2e base image ({' '.join(command)}); it needs "
            f"root and network access to {MIRROR}. Last lines of its log:\n{tail}"
        )
    for rel in _TRIM:
        for child in (rootfs / rel).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name != "lock":
                child.unlink()
    # Device nodes would need mknod to unpack (umoci --rootless cannot); runtimes mount /dev.
    for child in (rootfs / "dev").iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _pack(rootfs: Path, layout: Path) -> None:
    """Write `rootfs` as a one-layer OCI image layout (GNU tar keeps owners, links, modes)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    partial = blobs / ".layer.partial"
    diff_id, layer_digest, layer_size = hashlib.sha256(), hashlib.sha256(), 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    with tempfile.TemporaryFile() as errors, partial.open("wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "--sort=name", "-cf", "-", "."],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert tar.stdout is not None
        while chunk := tar.stdout.read(1 << 20):
            diff_id.update(chunk)
            data = compressor.compress(chunk)
            layer_digest.update(data)
            layer_size += len(data)
            out.write(data)
        data = compressor.flush()
        layer_digest.update(data)
        layer_size += len(data)
        out.write(data)
        tar.stdout.close()
        if tar.wait() != 0:
            errors.seek(0)
            raise BaseImageError(f"tar of the base rootfs failed:\n{errors.read().decode()}")
    partial.rename(blobs / layer_digest.hexdigest())

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": _ENV, "Cmd": ["python3"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id.hexdigest()}"]},
            "history": [
                {"created_by": f"debootstrap --variant=minbase --include={_PACKAGES} {SUITE}"}
            ],
        },
        sort_keys=True,
    ).encode()
    config_digest = _write_blob(blobs, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": OCI_LAYER_GZIP,
                    "digest": f"sha256:{layer_digest.hexdigest()}",
                    "size": layer_size,
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = _write_blob(blobs, manifest)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": TAG},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))


def _write_blob(blobs: Path, data: bytes) -> str:
    hex_ = hashlib.sha256(data).hexdigest()
    (blobs / hex_).write_bytes(data)
    return f"sha256:{hex_}"
