"""An exported layout is a standard OCI image layout: skopeo and umoci read it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from skiff.image.layers import build_layer
from skiff.image.layout import Layout
from skiff.image.oci import ImageConfig, Manifest, Platform
from skiff.image.sourcetree import Thresholds, plan_source_layers

REF = "model-latest"


def _build(model: Path, layout: Layout) -> tuple[Manifest, ImageConfig]:
    plan = plan_source_layers(model, thresholds=Thresholds(any_file=1024))
    layers = [build_layer(g, layout, "none") for g in plan.weights]
    layers.append(build_layer(plan.code, layout, "gzip"))
    config = (
        ImageConfig.for_platform(Platform.parse("linux/amd64"))
        .with_layers([layer.diff_id for layer in layers], "skiff: model folder")
        .with_env({"PYTHONUNBUFFERED": "1"})
        .with_run(cmd=["python", "-m", "cog.server.http"], working_dir="/src")
        .with_labels({"run.cog.version": "0.1.0", "run.cog.config": '{"predict":"p.py:P"}'})
    )
    descriptor = layout.write_image(config, [layer.descriptor for layer in layers], REF)
    assert layout.resolve(REF) == descriptor.with_annotations(
        **{"org.opencontainers.image.ref.name": REF}
    )
    return Manifest.from_bytes(layout.read_bytes(descriptor.digest)), config


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done.stdout


def test_skopeo_and_umoci_read_the_exported_layout(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "pkg").mkdir(parents=True)
    (model / "predict.py").write_text("class Predictor: ...\n")
    (model / "pkg" / "util.py").write_text("X = 1\n")
    (model / "run.sh").write_text("#!/bin/sh\n")
    (model / "run.sh").chmod(0o755)
    (model / "weights.safetensors").write_bytes(os.urandom(300_000))
    (model / "link.py").symlink_to("predict.py")
    layout = Layout.open(tmp_path / "cache")
    manifest, _ = _build(model, layout)
    assert len(manifest.layers) == 2

    out = tmp_path / "out"
    layout.export(REF, out)

    info = json.loads(_run("skopeo", "inspect", f"oci:{out}:{REF}"))
    assert info["Digest"] == str(manifest.digest)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Labels"]["run.cog.version"] == "0.1.0"
    assert info["Layers"] == [str(layer.digest) for layer in manifest.layers]

    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--rootless", "--image", f"{out}:{REF}", str(bundle))
    rootfs = bundle / "rootfs"
    for rel in ["predict.py", "pkg/util.py", "run.sh", "weights.safetensors"]:
        assert (rootfs / "src" / rel).read_bytes() == (model / rel).read_bytes(), rel
    assert os.readlink(rootfs / "src" / "link.py") == "predict.py"
    assert (rootfs / "src" / "run.sh").stat().st_mode & 0o111
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["cwd"] == "/src"
    assert runtime["process"]["args"] == ["python", "-m", "cog.server.http"]
    assert "PYTHONUNBUFFERED=1" in runtime["process"]["env"]


def test_rebuilding_elsewhere_gives_the_same_manifest_digest(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "predict.py").write_text("print(1)\n")
    (model / "w.bin").write_bytes(b"\7" * 5000)
    first, _ = _build(model, Layout.open(tmp_path / "one"))
    copy = tmp_path / "copy" / "model"
    copy.mkdir(parents=True)
    for name in ["predict.py", "w.bin"]:
        (copy / name).write_bytes((model / name).read_bytes())
        os.utime(copy / name, (5, 5))
    second, _ = _build(copy, Layout.open(tmp_path / "two"))
    assert first.digest == second.digest
