"""gpu: true — the CUDA base mapping, its errors, and the build path on a stand-in base image.

NVIDIA's images cannot be pulled here; the Debian base made with debootstrap stands in for one
(it has Python 3.11, so the Python step finds it and changes nothing).
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from skiff import config, reference
from skiff.digest import Digest
from skiff.errors import InvalidInput
from skiff.image.builder import Builder, BuildOptions
from skiff.image.gpu import CUDA_IMAGES, gpu_base, valid_combinations
from skiff.image.layers import StatCache
from skiff.image.layout import Layout
from skiff.image.oci import Descriptor, Manifest
from skiff.image.steps import Step, StepRunner, plan_steps, python_step, step_env
from support import RegistryServer, skopeo_push
from support.baseimage import python_base_layout

PREDICT = """from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> str:
        return "ok"
"""


@pytest.mark.parametrize(
    ("cuda", "cudnn", "python", "expected"),
    [
        ("11.8", None, "3.10", "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"),
        ("11.8.0", "8", "3.11.9", "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"),
        ("12.1", "8", "3.11", "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04"),
        ("12.3", None, "3.10", "nvidia/cuda:12.3.2-cudnn9-runtime-ubuntu22.04"),
        ("12.4", "9", "3.11", "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"),
        ("12.8", None, "3.12", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"),
        ("12.6", None, "3.11", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04"),
        (None, None, "3.11", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"),  # newest CUDA
        (None, "8", "3.10", "nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04"),
        ("12", None, "3.12", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"),
    ],
)
def test_mapping(cuda: str | None, cudnn: str | None, python: str, expected: str) -> None:
    base = gpu_base(cuda, cudnn, python)
    assert base.reference == expected
    assert base.python == ".".join(python.split(".")[:2])


@pytest.mark.parametrize(
    ("cuda", "cudnn", "python", "wanted"),
    [
        ("11.8", "9", "3.11", "cuda 11.8, cudnn 9, python 3.11"),
        ("12.1", None, "3.12", "cuda 12.1, python 3.12"),  # no Ubuntu 24.04 image of 12.1
        (None, None, "3.13", "python 3.13"),  # no Ubuntu LTS archive has it
        ("11.7", None, "3.10", "cuda 11.7, python 3.10"),
        ("12.10", None, "3.10", "cuda 12.10, python 3.10"),  # "12.1" must not match "12.10"
    ],
)
def test_impossible_combinations_name_the_valid_ones(
    cuda: str | None, cudnn: str | None, python: str, wanted: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        gpu_base(cuda, cudnn, python)
    assert caught.value.message == f"no CUDA base image for {wanted}"
    hint = caught.value.hint or ""
    assert "cuda 11.8.0 + cudnn 8 + python 3.10" in hint
    assert "cuda 12.8.1 + cudnn 9 + python 3.12" in hint
    assert "--base-image" in hint


def test_table_is_well_formed() -> None:
    assert len(valid_combinations()) == len(set(valid_combinations()))
    for image in CUDA_IMAGES:
        parsed = reference.parse(image.reference)
        assert str(parsed.repository) == "docker.io/nvidia/cuda"
        assert image.pythons  # every Ubuntu release in the table provides some Python


def write_model(folder: Path, build: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cog.yaml").write_text(f"build:\n{build}predict: predict.py:Predictor\n")
    (folder / "predict.py").write_text(PREDICT)
    return folder


def test_gpu_config_loads_and_plans_the_python_step(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m", "  gpu: true\n  cuda: '12.1'\n  python_version: '3.11'\n")
    cfg = config.load(model)  # no longer refused
    (step,) = plan_steps(cfg.build)
    assert step.role == "system" and "python3.11" in step.command


def test_impossible_gpu_model_fails_before_any_work(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m", "  gpu: true\n  cuda: '11.8'\n  python_version: '3.13'\n")
    layout = Layout.open(tmp_path / "oci")
    builder = Builder(model, BuildOptions(), layout=layout)
    with pytest.raises(InvalidInput, match=r"no CUDA base image for cuda 11\.8, python 3\.13"):
        builder.build()
    assert list(layout.blob_dir.iterdir()) == []  # nothing written, nothing pulled


def test_gpu_build_on_a_stand_in_base(tmp_path: Path, plain_registry: RegistryServer) -> None:
    skopeo_push(python_base_layout(), plain_registry, "stand-in/cuda", "11.8")
    model = write_model(tmp_path / "m", "  gpu: true\n  cuda: '11.8'\n  python_version: '3.11'\n")
    layout = Layout.open(tmp_path / "oci")
    options = BuildOptions(base_image=f"{plain_registry.host}/stand-in/cuda:11.8")
    image = Builder(model, options, layout=layout).build()
    assert [layer.role for layer in image.layers] == ["base", "system", "runtime", "code"]
    # The stand-in's python3 is already 3.11: the step installs nothing, links nothing.
    assert members(layout, image.layers[1].descriptor) == {}


def test_python_step_points_python3_at_the_wanted_version(tmp_path: Path) -> None:
    """On a base whose python3 is another interpreter, the step links the wanted one."""
    image = python_base_layout()
    layout = Layout.open(tmp_path / "oci")
    for blob in (image.layout / "blobs" / "sha256").iterdir():
        shutil.copyfile(blob, layout.path(Digest(blob.name)))
    runner = StepRunner(
        layout,
        StatCache(tmp_path / "cache"),
        Manifest.from_bytes(image.manifest).layers,
        env=step_env({}, {}),
        work_dir=tmp_path / "work",
    )
    wrong = Step("ln -s /bin/true /usr/local/bin/python3")
    results = runner.run([wrong, python_step("3.11"), Step("python3 --version > /version")])
    assert members(layout, results[1].layer.descriptor) == {
        "usr/local/bin/python3": "/usr/bin/python3.11"
    }
    version = members(layout, results[2].layer.descriptor)["version"]
    assert isinstance(version, bytes) and version.startswith(b"Python 3.11.")


def members(layout: Layout, descriptor: Descriptor) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    with layout.open_blob(descriptor.digest) as blob, tarfile.open(fileobj=blob) as tar:
        for member in tar:
            if member.isdir():
                continue
            f = tar.extractfile(member) if member.isfile() else None
            out[member.name] = f.read() if f else member.linkname
    return out
