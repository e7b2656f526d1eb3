"""Python dependencies installed by uv for the target platform (needs PyPI, as uv does)."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from skiff.errors import BuildFailed, InvalidInput
from skiff.image.layers import Layer, StatCache
from skiff.image.layout import Layout
from skiff.image.oci import Platform
from skiff.image.options import DEFAULT_SDK_VERSION
from skiff.image.pydeps import (
    PYTHON_SHIM,
    PYTHON_SHIM_DIR,
    Requirements,
    check_sdk_version,
    python_deps_layer,
    python_platform,
    sdk_layer,
    without_sdk,
)

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
SITE = "opt/skiff/site-packages"


def _files(layout: Layout, layer: Layer) -> dict[str, tarfile.TarInfo | bytes]:
    data = gzip.decompress(layout.read_bytes(layer.descriptor.digest))
    assert hashlib.sha256(data).hexdigest() == layer.diff_id.hex
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid) == (0, 0, 0)
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f is not None else m
    return out


def test_installs_a_package_for_linux_amd64_and_caches_the_layer(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\nsix==1.16.0\n")
    layer = python_deps_layer(requirements, "3.11", AMD64, layout, stat_cache=cache)
    assert layer is not None
    files = _files(layout, layer)
    assert b'__version__ = "1.16.0"' in files[f"{SITE}/six.py"]  # type: ignore[operator]
    assert f"{SITE}/six-1.16.0.dist-info/METADATA" in files
    assert f"{SITE}/.lock" not in files
    assert list(cache.root.glob("pydeps-*.json"))
    # Same requirements, in another order and spelling of the list: the cached layer.
    again = python_deps_layer(["six==1.16.0", "  "], "3.11", AMD64, layout, stat_cache=cache)
    assert again == layer


def test_same_requirements_give_the_same_layer_without_the_cache(tmp_path: Path) -> None:
    one = python_deps_layer(["six==1.16.0"], "3.11", AMD64, Layout.open(tmp_path / "a"))
    two = python_deps_layer(["six==1.16.0"], "3.11", AMD64, Layout.open(tmp_path / "b"))
    assert one is not None and one == two


def test_arm64_console_scripts_point_at_the_images_python(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    layer = python_deps_layer(["tqdm==4.66.4"], "3.12", ARM64, layout)
    assert layer is not None
    files = _files(layout, layer)
    script = files[f"{SITE}/bin/tqdm"]
    assert isinstance(script, bytes)
    assert script.startswith(b"#!/usr/bin/env python3\n")
    record = files[f"{SITE}/tqdm-4.66.4.dist-info/RECORD"]
    assert isinstance(record, bytes)
    rows = {row[0]: row for row in csv.reader(io.StringIO(record.decode()))}
    expected = base64.urlsafe_b64encode(hashlib.sha256(script).digest()).rstrip(b"=").decode()
    assert rows["bin/tqdm"][1:] == [f"sha256={expected}", str(len(script))]


def test_uv_failure_is_a_build_error_with_uvs_explanation(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed) as caught:
        python_deps_layer(["six==0.0.0.1"], "3.11", AMD64, Layout.open(tmp_path))
    assert "linux/amd64" in caught.value.message
    assert caught.value.hint is not None
    assert "six" in caught.value.hint and "cog.yaml" in caught.value.hint


def test_no_requirements_no_layer(tmp_path: Path) -> None:
    assert python_deps_layer(["# nothing", ""], "3.11", AMD64, Layout.open(tmp_path)) is None


def test_inputs_are_validated_before_running_uv(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Python version"):
        python_deps_layer(["six"], "3", AMD64, Layout.open(tmp_path))
    with pytest.raises(InvalidInput, match="windows/amd64"):
        python_platform(Platform.parse("windows/amd64"))
    assert python_platform(ARM64) == "aarch64-manylinux_2_28"


def test_requirement_keys() -> None:
    reqs = Requirements(("torch==2.3  # gpu", "", "numpy", "# c"))
    assert reqs.significant == ("numpy", "torch==2.3")
    assert reqs.cacheable
    assert not Requirements(("-r other.txt",)).cacheable
    assert not Requirements(("./local_pkg",)).cacheable


def test_cog_and_coglet_lines_are_dropped_with_a_warning(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.1.0\nCog==0.9.4  # old\ncoglet>=0.17\n# cog\ncogito==1\n")
    kept, warnings = without_sdk(requirements)
    assert kept.significant == ("cogito==1", "numpy==2.1.0")
    assert kept.base_dir == tmp_path
    assert [w.split("'")[1] for w in warnings] == ["Cog==0.9.4  # old", "coglet>=0.17"]


def test_the_sdk_layer_adds_only_what_the_users_packages_lack(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    deps = python_deps_layer(["requests==2.32.3"], "3.11", AMD64, layout, stat_cache=cache)
    assert deps is not None
    sdk = sdk_layer(DEFAULT_SDK_VERSION, "3.11", AMD64, layout, deps, stat_cache=cache)
    files = _files(layout, sdk.layer)
    assert f"{SITE}/cog/server/http.py" in files
    assert f"{SITE}/coglet-{DEFAULT_SDK_VERSION}.dist-info/METADATA" in files
    assert files[f"{PYTHON_SHIM_DIR.lstrip('/')}/python"] == PYTHON_SHIM
    assert not any(name.startswith(f"{SITE}/requests") for name in files)  # the user's, kept
    assert (sdk.cog_version, sdk.coglet_version) == (DEFAULT_SDK_VERSION, DEFAULT_SDK_VERSION)
    assert "requests==2.32.3" in sdk.freeze and f"cog=={DEFAULT_SDK_VERSION}" in sdk.freeze
    assert list(sdk.freeze) == sorted(sdk.freeze, key=str.lower)
    # The same inputs: the cached layer and freeze, without uv.
    assert sdk_layer(DEFAULT_SDK_VERSION, "3.11", AMD64, layout, deps, stat_cache=cache) == sdk


def test_a_user_pin_that_clashes_with_cogs_dependencies_is_a_build_error(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    deps = python_deps_layer(["structlog==20.2.0"], "3.11", AMD64, layout)  # cog needs >=21
    with pytest.raises(BuildFailed) as caught:
        sdk_layer(DEFAULT_SDK_VERSION, "3.11", AMD64, layout, deps)
    assert f"cog {DEFAULT_SDK_VERSION}" in caught.value.message
    assert caught.value.hint is not None
    assert "structlog" in caught.value.hint and "conflicts" in caught.value.hint


def test_sdk_versions_are_checked_before_uv_runs() -> None:
    for version in ("latest", "0.23.1; rm -rf /", ""):
        with pytest.raises(InvalidInput, match="invalid Cog SDK version"):
            check_sdk_version(version)
    with pytest.raises(InvalidInput, match="too old"):
        check_sdk_version("0.15.9")
    check_sdk_version("0.23.1")
    check_sdk_version("0.17.0rc4")
