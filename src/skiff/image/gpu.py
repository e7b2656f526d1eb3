"""``gpu: true``: which CUDA base image a model gets, and how its Python gets there.

Cog builds GPU models on its own ``r8.im/cog-base`` images (or on ``nvidia/cuda`` with Python
compiled by pyenv). skiff uses NVIDIA's public runtime images, ``nvidia/cuda:<CUDA>-cudnn…-runtime-
ubuntu<RELEASE>``, and takes Python from that Ubuntu release's own archive, so nothing is
compiled and every file comes from a signed distribution package:

=========  ==================================================
Ubuntu     Python from its archive
=========  ==================================================
22.04      3.10 (``python3.10``, main), 3.11 (``python3.11``, universe)
24.04      3.12 (``python3.12``, main)
=========  ==================================================

The Python is installed by a build step (``steps.python_step``) that does nothing when the base
image already has that version; it makes ``/usr/local/bin/python3`` that version, which is what the
image's command runs. A model's Python packages (torch included) come from wheels, as for any
model: CUDA libraries that torch needs ship in its wheels; the base brings the driver-facing
runtime and cuDNN.

The table below is a snapshot of NVIDIA's tags; ``--base-image`` (or ``SKIFF_BASE_IMAGE``) picks
any other image, which then gets the same Python step.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.errors import InvalidInput

_UBUNTU_PYTHONS = {"22.04": ("3.10", "3.11"), "24.04": ("3.12",)}


@dataclass(frozen=True)
class CudaImage:
    """One ``nvidia/cuda`` runtime image with cuDNN."""

    cuda: str  # full version, e.g. 12.1.1
    cudnn: str  # major version
    ubuntu: str
    cudnn_in_tag: bool = True  # NVIDIA dropped the cuDNN major from the tag after CUDA 12.3

    @property
    def reference(self) -> str:
        cudnn = f"cudnn{self.cudnn}" if self.cudnn_in_tag else "cudnn"
        return f"nvidia/cuda:{self.cuda}-{cudnn}-runtime-ubuntu{self.ubuntu}"

    @property
    def pythons(self) -> tuple[str, ...]:
        return _UBUNTU_PYTHONS[self.ubuntu]

    def matches_cuda(self, wanted: str) -> bool:
        """``12.1`` matches 12.1.x; ``12.1.1`` only itself."""
        parts = wanted.split(".")
        return self.cuda.split(".")[: len(parts)] == parts


CUDA_IMAGES: tuple[CudaImage, ...] = (
    CudaImage("11.8.0", "8", "22.04"),
    CudaImage("12.1.1", "8", "22.04"),
    CudaImage("12.2.2", "8", "22.04"),
    CudaImage("12.3.2", "9", "22.04"),
    CudaImage("12.4.1", "9", "22.04", cudnn_in_tag=False),
    CudaImage("12.6.3", "9", "22.04", cudnn_in_tag=False),
    CudaImage("12.6.3", "9", "24.04", cudnn_in_tag=False),
    CudaImage("12.8.1", "9", "22.04", cudnn_in_tag=False),
    CudaImage("12.8.1", "9", "24.04", cudnn_in_tag=False),
)


@dataclass(frozen=True)
class GpuBase:
    image: CudaImage
    python: str

    @property
    def reference(self) -> str:
        return self.image.reference


def _minor(python_version: str) -> str:
    return ".".join(python_version.split(".")[:2])


def valid_combinations() -> list[str]:
    """Every CUDA / cuDNN / Python combination skiff can build, for error messages."""
    return [
        f"cuda {image.cuda} + cudnn {image.cudnn} + python {python}"
        for image in CUDA_IMAGES
        for python in image.pythons
    ]


def gpu_base(cuda: str | None, cudnn: str | None, python_version: str) -> GpuBase:
    """The base for a ``gpu: true`` model; InvalidInput naming what is possible otherwise.

    Without ``cuda``, the newest CUDA that has the Python wins; without ``cudnn``, the one
    NVIDIA ships with that CUDA. Among equal choices, the newer Ubuntu release wins.
    """
    python = _minor(python_version)
    candidates = [
        image
        for image in CUDA_IMAGES
        if (cuda is None or image.matches_cuda(cuda))
        and (cudnn is None or image.cudnn == cudnn.split(".")[0])
        and python in image.pythons
    ]
    if not candidates:
        wanted = ", ".join(
            part
            for part in (
                f"cuda {cuda}" if cuda else None,
                f"cudnn {cudnn}" if cudnn else None,
                f"python {python}",
            )
            if part
        )
        raise InvalidInput(
            f"no CUDA base image for {wanted}",
            "valid combinations: "
            + "; ".join(valid_combinations())
            + ". Or pass --base-image with a CUDA image of your choice.",
        )
    best = max(candidates, key=lambda i: (_version_key(i.cuda), _version_key(i.ubuntu)))
    return GpuBase(best, python)


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


__all__ = ["CUDA_IMAGES", "CudaImage", "GpuBase", "gpu_base", "valid_combinations"]
