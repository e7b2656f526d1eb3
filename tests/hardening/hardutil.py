"""Helpers of the hardening suite: model folders with chosen weights, the `skiff` executable,
and the "no broken image in the registry" check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import RegistryServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
SKIFF = Path(sys.executable).parent / "skiff"
MB = 1024 * 1024


def make_model(parent: Path, weights: int = 0, name: str = "hello") -> Path:
    """A copy of examples/hello; with ``weights`` > 0, plus that many random bytes of weights."""
    model = parent / name
    shutil.copytree(EXAMPLE, model)
    if weights:
        (model / "weights" / "big.bin").write_bytes(os.urandom(weights))
    return model


def skiff(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def assert_complete(registry: RegistryServer, repo: str) -> None:
    """Every manifest in ``repo`` has its config and layers in the registry, whole."""
    linked = set(registry.layers(repo))
    for digest in registry.manifests(repo):
        manifest = json.loads(registry.blob_bytes(digest))
        for blob in (manifest["config"], *manifest["layers"]):
            assert blob["digest"] in linked, f"{blob['digest']} is missing from {repo}"
            assert len(registry.blob_bytes(blob["digest"])) == blob["size"]


def open_sessions(registry: RegistryServer, repo: str) -> list[str]:
    """Upload sessions the registry still holds: a directory with a ``startedat`` file.

    (Distribution leaves an empty ``hashstates`` folder behind a cancelled session: not open.)
    """
    base = registry.root / "docker/registry/v2/repositories" / repo / "_uploads"
    return sorted(started.parent.name for started in base.glob("*/startedat"))
