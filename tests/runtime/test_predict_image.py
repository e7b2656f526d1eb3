"""``skiff predict IMAGE`` and ``skiff serve IMAGE``: an image that keeps Cog's contract, from
skiff's cache by name or pulled from a registry, unpacked once and run under bubblewrap with
its own Env, WorkingDir and Cmd, as ``cog predict IMAGE`` runs one with Docker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cogimage import compose, install_cog, push

from conftest import (
    GONE_TIMEOUT_S,
    MODELS,
    descendants,
    free_port,
    port_is_free,
    skiff,
    wait_gone,
    wait_ready,
)
from skiff.image.layout import Layout, default_layout
from support import RegistryServer

# A cold machine makes the Debian base image first (debootstrap, about 2 minutes).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def cog_site(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Path:
    return install_cog(tmp_path_factory.mktemp("cog-site"), uv_cache)


def rootfs_dirs() -> list[Path]:
    root = Path(os.environ["SKIFF_CACHE_DIR"]) / "run" / "rootfs"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_predict_an_image_from_the_cache(tmp_path: Path, cog_site: Path) -> None:
    compose(default_layout(), MODELS / "echo", cog_site, "echo-image")
    done = skiff("predict", "echo-image", "-i", "text=hi", "-i", "times=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: hi hi\n"
    unpacked = rootfs_dirs()
    assert len(unpacked) == 1
    marker = (unpacked[0] / ".skiff-complete").stat().st_mtime_ns
    # Again: the unpacked image is reused, and the image's schema types the inputs (a 422
    # from Cog's server for an ill-typed one, exit 2).
    bad = skiff("predict", "echo-image", "-i", "text=hi", "-i", "times=many", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "times" in bad.stderr
    assert rootfs_dirs() == unpacked
    assert (unpacked[0] / ".skiff-complete").stat().st_mtime_ns == marker


def test_predict_a_pushed_image(
    tmp_path: Path, cog_site: Path, plain_registry: RegistryServer
) -> None:
    scratch = Layout.open(tmp_path / "elsewhere")
    compose(scratch, MODELS / "files", cog_site, "files-image")
    reference = push(scratch, "files-image", plain_registry.host, "runtime/files:v1", tmp_path)
    (tmp_path / "doc.txt").write_text("from the registry")
    done = skiff("predict", reference, "-i", "document=@doc.txt", "-o", "result.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "result.txt").read_text() == "FROM THE REGISTRY"
    assert "Written output to: result.txt" in done.stderr


def test_unknown_image_is_exit_2(tmp_path: Path) -> None:
    done = skiff("predict", "Not A Reference", "-i", "text=hi", cwd=tmp_path)
    assert done.returncode == 2
    assert "neither an image in skiff's cache nor an image reference" in done.stderr


def test_serve_an_image_until_sigterm(tmp_path: Path, cog_site: Path) -> None:
    compose(default_layout(), MODELS / "echo", cog_site, "served")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "skiff.cli", "serve", "served", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(url, process)
        answer = httpx.post(f"{url}/predictions", json={"input": {"text": "box"}}, timeout=30)
        assert answer.json()["output"] == "echo: box"
        schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
        assert "text" in schema["components"]["schemas"]["Input"]["properties"]
        tree = descendants(process.pid)
        assert len(tree) >= 3, tree  # bwrap, the server, its worker
        os.kill(process.pid, signal.SIGTERM)
        process.wait(GONE_TIMEOUT_S)
        assert wait_gone(tree) == []
        assert port_is_free(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
