"""``skiff build`` of the example model: reproducible, separate layers, OCI layout, stat cache.

Real parts throughout: a Distribution registry serves the base image, the CLI runs as a
subprocess, skopeo and umoci read what it exports, the kernel (inotify) says which files it read.
"""

from __future__ import annotations

import ctypes
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from skiff.errors import BuildFailed, InvalidInput
from skiff.image.builder import Builder, BuildOptions, BuiltImage, BuiltLayer
from skiff.image.layers import Entry, StatCache
from skiff.image.layout import Layout
from skiff.image.oci import OCI_LAYER, OCI_LAYER_GZIP
from skiff.image.options import DEFAULT_SDK_VERSION
from skiff.image.pydeps import PYTHON_SHIM
from support import RegistryServer, push_tiny_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"
SKIFF = Path(sys.executable).parent / "skiff"
WEIGHTS = "weights/table.bin"


@pytest.fixture
def base_image(plain_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny base image in a local registry, used instead of python:X.Y-slim from Docker Hub."""
    push_tiny_image(plain_registry, "base/tiny", "1")
    ref = f"{plain_registry.host}/base/tiny:1"
    monkeypatch.setenv("SKIFF_BASE_IMAGE", ref)
    return ref


def copy_model(parent: Path, name: str = "hello") -> Path:
    """A private copy of examples/hello."""
    model = parent / name
    shutil.copytree(EXAMPLE, model)
    return model


def build(model: Path, layout: Layout, **options: str) -> BuiltImage:
    return Builder(model, BuildOptions(**options), layout=layout).build()  # type: ignore[arg-type]


def skiff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SKIFF), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=dict(os.environ),
    )


def roles(image: BuiltImage) -> list[str]:
    return [layer.role for layer in image.layers]


def layer_of(image: BuiltImage, role: str) -> int:
    (index,) = [i for i, layer in enumerate(image.layers) if layer.role == role]
    return index


def tar_members(layout: Layout, image: BuiltImage, role: str) -> dict[str, bytes | None]:
    descriptor = image.layers[layer_of(image, role)].descriptor
    data = layout.read_bytes(descriptor.digest)
    if descriptor.media_type == OCI_LAYER_GZIP:
        data = gzip.decompress(data)
    members: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            members[member.name] = handle.read() if handle is not None else None
    return members


def image_config(layout: Layout, image: BuiltImage) -> dict[str, object]:
    config: dict[str, object] = json.loads(layout.read_bytes(image.config_descriptor.digest))
    return config


def label(layout: Layout, image: BuiltImage, name: str) -> str:
    run = image_config(layout, image)["config"]
    assert isinstance(run, dict)
    value: str = run["Labels"][name]
    return value


# -- reproducible, separate layers -------------------------------------------------------------


def test_two_copies_with_other_names_and_mtimes_build_the_same_image(
    tmp_path: Path, base_image: str
) -> None:
    one = copy_model(tmp_path / "one")
    two = copy_model(tmp_path / "two", "checkout-elsewhere")
    for path in [two, *two.rglob("*")]:
        os.utime(path, (1_000_000_000, 1_000_000_000))  # 2001, unlike the fresh copy
    # Separate caches (the stat cache sits beside the layout): nothing is shared.
    first = build(one, Layout.open(tmp_path / "cache-one" / "layout"))
    second = build(two, Layout.open(tmp_path / "cache-two" / "layout"))
    assert first.manifest_descriptor.digest == second.manifest_descriptor.digest
    assert [layer.descriptor for layer in first.layers] == [
        layer.descriptor for layer in second.layers
    ]


def test_runtime_weights_and_code_are_separate_layers(tmp_path: Path, base_image: str) -> None:
    layout = Layout.open(tmp_path / "cache")
    image = build(copy_model(tmp_path), layout)
    assert roles(image) == ["base", "runtime", "weights", "code"]
    assert len({layer.descriptor.digest for layer in image.layers}) == 4

    weights = image.layers[layer_of(image, "weights")].descriptor
    assert weights.media_type == OCI_LAYER  # incompressible: stored as a plain tar
    assert weights.size > 3 * 1024 * 1024
    weight_files = tar_members(layout, image, "weights")
    assert weight_files[f"src/{WEIGHTS}"] == (EXAMPLE / WEIGHTS).read_bytes()
    assert not any(name.endswith(".py") for name in weight_files)

    code_files = tar_members(layout, image, "code")
    assert code_files["src/predict.py"] == (EXAMPLE / "predict.py").read_bytes()
    assert "src/cog.yaml" in code_files
    assert not any(name.startswith("src/weights/") and data for name, data in code_files.items())

    # Cog's own runtime from PyPI, and the `python` its server starts workers with.
    runtime_files = tar_members(layout, image, "runtime")
    assert "opt/skiff/site-packages/cog/__init__.py" in runtime_files
    assert "opt/skiff/site-packages/coglet-0.23.1.dist-info/METADATA" in runtime_files
    assert runtime_files["opt/skiff/bin/python"] == PYTHON_SHIM
    assert all(name == "opt" or name.startswith("opt/") for name in runtime_files)
    assert "src/.cog/openapi_schema.json" in code_files


def test_a_code_change_changes_only_the_code_layer(tmp_path: Path, base_image: str) -> None:
    layout = Layout.open(tmp_path / "cache")
    model = copy_model(tmp_path)
    before = build(model, layout)
    with (model / "predict.py").open("a") as handle:
        handle.write("# a one-line change\n")
    after = build(model, layout)

    assert roles(after) == roles(before)
    changed = [
        old.role
        for old, new in zip(before.layers, after.layers, strict=True)
        if old.descriptor != new.descriptor
    ]
    assert changed == ["code"]
    assert after.manifest_descriptor.digest != before.manifest_descriptor.digest


def test_the_image_config_is_cogs_contract(tmp_path: Path, base_image: str) -> None:
    layout = Layout.open(tmp_path / "cache")
    image = build(copy_model(tmp_path), layout)
    config = image_config(layout, image)
    run = config["config"]
    assert isinstance(run, dict)
    assert run["WorkingDir"] == "/src"
    assert run["Cmd"] == ["python", "-m", "cog.server.http"]
    assert run["ExposedPorts"] == {"5000/tcp": {}}
    labels = run["Labels"]
    completed = json.loads(labels["run.cog.config"])
    written = yaml.safe_load((EXAMPLE / "cog.yaml").read_text())
    assert completed["predict"] == written["predict"]
    assert completed["build"]["python_version"] == written["build"]["python_version"]
    assert completed["build"]["sdk_version"] == DEFAULT_SDK_VERSION
    assert labels["run.cog.version"] == DEFAULT_SDK_VERSION  # the SDK's, not skiff's
    assert labels["run.cog.has_init"] == "true"
    freeze = labels["run.cog.pip_freeze"].splitlines()
    assert f"cog=={DEFAULT_SDK_VERSION}" in freeze and f"coglet=={DEFAULT_SDK_VERSION}" in freeze
    schema = tar_members(layout, image, "code")["src/.cog/openapi_schema.json"]
    assert schema is not None
    assert json.loads(schema) == json.loads(labels["run.cog.openapi_schema"])
    env = dict(item.split("=", 1) for item in run["Env"])
    assert env["COG_PREDICT_TYPE_STUB"] == "predict.py:Predictor"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/skiff/bin:")
    assert "COG_PREDICTOR" not in env and "COG_TRAIN_TYPE_STUB" not in env
    # One diff_id per layer, base included, in manifest order.
    rootfs = config["rootfs"]
    assert isinstance(rootfs, dict)
    assert len(rootfs["diff_ids"]) == len(image.layers)


def test_python_packages_get_their_own_deps_layer(tmp_path: Path, base_image: str) -> None:
    model = copy_model(tmp_path)
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    spec["build"]["python_packages"] = ["six==1.16.0"]
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    layout = Layout.open(tmp_path / "cache")
    image = build(model, layout)  # uv reaches PyPI
    assert roles(image) == ["base", "deps", "runtime", "weights", "code"]
    deps = tar_members(layout, image, "deps")
    six = deps["opt/skiff/site-packages/six.py"]
    assert six is not None and b'__version__ = "1.16.0"' in six
    assert "six==1.16.0" in label(layout, image, "run.cog.pip_freeze").splitlines()


def test_the_sdk_layer_keeps_the_users_packages_and_changes_alone(
    tmp_path: Path, base_image: str
) -> None:
    """cog's dependencies resolve against the user's pins, the user's packages are not installed
    twice, a cog line in the requirements is dropped with a warning, and --sdk-version changes
    the SDK layer only."""
    model = copy_model(tmp_path)
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    spec["build"]["python_packages"] = ["requests==2.32.3", "cog==0.16.0"]
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    layout = Layout.open(tmp_path / "cache")
    image = build(model, layout)
    assert any("cog==0.16.0" in warning for warning in image.warnings)
    sdk_files = tar_members(layout, image, "runtime")
    assert not any(name.startswith("opt/skiff/site-packages/requests") for name in sdk_files)
    freeze = label(layout, image, "run.cog.pip_freeze").splitlines()
    assert "requests==2.32.3" in freeze and f"cog=={DEFAULT_SDK_VERSION}" in freeze

    other = build(model, layout, sdk_version="0.23.0")
    changed = [
        old.role
        for old, new in zip(image.layers, other.layers, strict=True)
        if old.descriptor != new.descriptor
    ]
    # The code layer holds .cog/openapi_schema.json, whose info.version names the SDK (as Cog
    # writes it); the user's packages and everything else stay.
    assert changed == ["runtime", "code"]
    assert label(layout, other, "run.cog.version") == "0.23.0"


# -- the CLI and the OCI layout it exports ------------------------------------------------------


def test_output_layout_is_read_by_skopeo_and_umoci(tmp_path: Path, base_image: str) -> None:
    model = copy_model(tmp_path)
    # Code of several MiB: its gzip layer is several members, which umoci (Go) must read whole.
    table = "".join(f"ENTRY_{i} = {i * 17 % 4099}\n" for i in range(250_000))
    (model / "table.py").write_text(table)
    out = tmp_path / "layout"
    done = skiff("build", "-t", "hello:v1", "--output-layout", str(out), "-C", str(model))
    assert done.returncode == 0, done.stderr
    name = "docker.io/library/hello:v1"

    info = subprocess.run(
        ["skopeo", "inspect", f"oci:{out}:{name}"], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    inspected = json.loads(info.stdout)
    assert len(inspected["Layers"]) == 4
    assert inspected["Labels"]["run.cog.version"] == DEFAULT_SDK_VERSION
    assert f"built {inspected['Digest']}" in done.stderr

    bundle = tmp_path / "bundle"
    unpack = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{out}:{name}", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpack.returncode == 0, unpack.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "src" / "predict.py").read_bytes() == (EXAMPLE / "predict.py").read_bytes()
    assert (rootfs / "src" / "table.py").read_text() == table
    assert (rootfs / "src" / WEIGHTS).stat().st_size == (EXAMPLE / WEIGHTS).stat().st_size
    assert (rootfs / "opt" / "skiff" / "site-packages" / "coglet" / "__init__.py").is_file()
    assert (rootfs / "src" / ".cog" / "openapi_schema.json").is_file()
    assert (rootfs / "hello.txt").is_file()  # the base image's own file
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["cwd"] == "/src"


def test_invalid_cog_yaml_fails_the_build_with_exit_2(tmp_path: Path, base_image: str) -> None:
    model = copy_model(tmp_path)
    (model / "cog.yaml").write_text('build:\n  python_verison: "3.11"\npredict: "predict.py:P"\n')
    done = skiff("build", "-C", str(model))
    assert done.returncode == 2, done.stderr
    assert "python_verison" in done.stderr
    assert "Traceback" not in done.stderr


# -- warm rebuild: the kernel says what was read --------------------------------------------------

IN_ACCESS = 0x001
IN_OPEN = 0x020
IN_NONBLOCK = os.O_NONBLOCK


class FileReads:
    """Counts opens and reads of one file with inotify (what the kernel saw, not what we hope)."""

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            pytest.skip("inotify is not available here")
        wd = self._libc.inotify_add_watch(self.fd, str(path).encode(), IN_OPEN | IN_ACCESS)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> list[int]:
        masks: list[int] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return masks
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                masks.append(mask)
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def weights_reads(tmp_path: Path) -> Iterator[tuple[Path, FileReads]]:
    model = copy_model(tmp_path)
    watch = FileReads(model / WEIGHTS)
    yield model, watch
    watch.close()


def test_warm_rebuild_does_not_read_the_weights_again(
    weights_reads: tuple[Path, FileReads], base_image: str
) -> None:
    model, watch = weights_reads
    cold = skiff("build", "-C", str(model))
    assert cold.returncode == 0, cold.stderr
    assert watch.events(), "the cold build must have read the weights (the watch works)"

    warm = skiff("build", "-C", str(model))
    assert warm.returncode == 0, warm.stderr
    assert watch.events() == []
    assert _built(warm.stderr) == _built(cold.stderr)

    # Touching the file changes its stat result: it is read again, and the image is the same.
    os.utime(model / WEIGHTS)
    touched = skiff("build", "-C", str(model))
    assert touched.returncode == 0, touched.stderr
    assert watch.events()
    assert _built(touched.stderr) == _built(cold.stderr)


def _built(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("built sha256:")]
    return line.split()[1]


# -- the base image: errors name it ---------------------------------------------------------------


def test_a_base_image_for_another_platform_is_a_build_error(
    tmp_path: Path, base_image: str
) -> None:
    done = skiff("build", "--platform", "linux/arm64", "-C", str(copy_model(tmp_path)))
    assert done.returncode == 4, done.stderr
    assert base_image in done.stderr and "arm64" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_base_image_is_a_build_error_naming_it(
    tmp_path: Path, plain_registry: RegistryServer
) -> None:
    missing = f"{plain_registry.host}/base/nothing-here:1"
    done = skiff("build", "--base-image", missing, "-C", str(copy_model(tmp_path)))
    assert done.returncode == 4, done.stderr
    assert missing in done.stderr
    assert "Traceback" not in done.stderr


def test_a_weights_layer_that_fails_stops_one_built_before_it_in_order(tmp_path: Path) -> None:
    """Layers built side by side: the third fails at once (its file is gone), and the first,
    2 GiB long, stops at its next read instead of being written to its end."""
    big = tmp_path / "a.bin"
    with big.open("wb") as f:
        f.truncate(2048 * 1024 * 1024)  # sparse: nothing on disk until the layer is written
    groups = [
        [Entry.file("/src/weights/a.bin", big)],
        [Entry.file("/src/weights/b.bin", b"small")],
        [Entry.file("/src/weights/gone.bin", tmp_path / "gone.bin")],
    ]
    layout = Layout.open(tmp_path / "oci")
    builder = Builder(copy_model(tmp_path), BuildOptions(), layout=layout)
    with pytest.raises(BuildFailed, match=r"gone\.bin"):
        builder._weights_layers(groups, layout, StatCache(tmp_path / "stat"))
    sizes = [path.stat().st_size for path in layout.blob_dir.iterdir() if path.is_file()]
    assert all(size < 1024 * 1024 * 1024 for size in sizes), "the 2 GiB layer was finished"


def test_large_weights_files_are_built_side_by_side_in_a_fixed_order(
    tmp_path: Path, base_image: str
) -> None:
    """Three weights files of 256 MiB (sparse: no disk used) get a layer each, written at the
    same time, and the image is the same as one built again from scratch."""
    model = copy_model(tmp_path)
    for name in ("c.bin", "a.bin", "b.bin"):
        with (model / "weights" / name).open("wb") as f:
            f.truncate(256 * 1024 * 1024)
    events: list[str] = []

    def started(_blob: object, role: str) -> None:
        events.append(f"start {role}")

    def finished(layer: BuiltLayer) -> None:
        events.append(f"done {layer.role}")

    layout = Layout.open(tmp_path / "oci")
    image = Builder(
        model, BuildOptions(), layout=layout, on_layer=finished, on_layer_started=started
    ).build()
    weights = [layer for layer in image.layers if layer.role == "weights"]
    assert len(weights) == 4  # the three large files, and table.bin in a layer of its own
    first_done = events.index("done weights")
    assert events[:first_done].count("start weights") >= 3
    files = []
    for layer in weights:
        with tarfile.open(layout.path(layer.descriptor.digest)) as tar:
            files.append([m.name for m in tar if m.isfile()])
    assert files == [
        ["src/weights/a.bin"],
        ["src/weights/b.bin"],
        ["src/weights/c.bin"],
        ["src/weights/table.bin"],
    ]

    again = build(model, Layout.open(tmp_path / "oci-again"))
    assert again.manifest_descriptor == image.manifest_descriptor


# -- Cog's contract from cog.yaml and the source ---------------------------------------------------


def run_env(layout: Layout, image: BuiltImage) -> dict[str, str]:
    run = image_config(layout, image)["config"]
    assert isinstance(run, dict)
    return dict(item.split("=", 1) for item in run["Env"])


def test_train_and_concurrency_reach_the_runtimes_env(tmp_path: Path, base_image: str) -> None:
    model = copy_model(tmp_path)
    (model / "train.py").write_text("def train(steps: int) -> str:\n    return str(steps)\n")
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    spec.update(train="train.py:train", concurrency={"max": 4})
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    layout = Layout.open(tmp_path / "cache")
    env = run_env(layout, build(model, layout))
    assert env["COG_TRAIN_TYPE_STUB"] == "train.py:train"
    assert env["COG_MAX_CONCURRENCY"] == "4"


def test_concurrency_is_read_from_the_decorator_without_running_the_code(
    tmp_path: Path, base_image: str
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "cog.yaml").write_text('build:\n  python_version: "3.12"\nrun: predict.py:Runner\n')
    (model / "predict.py").write_text(
        "import cog\n\n\n"
        "class Runner(cog.BaseRunner):\n"
        "    @cog.concurrent(max=8)\n"
        "    async def run(self, text: str) -> str:\n"
        "        return text\n"
    )
    layout = Layout.open(tmp_path / "cache")
    env = run_env(layout, build(model, layout))
    assert env["COG_MAX_CONCURRENCY"] == "8"
    assert env["COG_PREDICT_TYPE_STUB"] == "predict.py:Runner"


def test_git_labels_name_the_commit_and_its_tag(tmp_path: Path, base_image: str) -> None:
    model = copy_model(tmp_path)
    layout = Layout.open(tmp_path / "cache")
    outside = build(model, layout)
    assert not any(name.startswith("org.opencontainers") for name in labels_of(layout, outside))

    git = ["git", "-C", str(model), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "model"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    committed = labels_of(layout, build(model, layout))
    assert committed["org.opencontainers.image.revision"] == head
    assert "org.opencontainers.image.version" not in committed

    subprocess.run([*git, "tag", "v1.2.0"], check=True, capture_output=True)
    tagged = labels_of(layout, build(model, layout))
    assert tagged["org.opencontainers.image.version"] == "v1.2.0"


def labels_of(layout: Layout, image: BuiltImage) -> dict[str, str]:
    run = image_config(layout, image)["config"]
    assert isinstance(run, dict)
    return dict(run["Labels"])


def test_a_cog_older_than_cogs_minimum_is_refused_before_any_work(
    tmp_path: Path, base_image: str
) -> None:
    layout = Layout.open(tmp_path / "cache")
    with pytest.raises(InvalidInput, match="too old"):
        build(copy_model(tmp_path), layout, sdk_version="0.9.4")
    assert not list((tmp_path / "stat-cache").glob("*"))


def test_sdk_version_flag_is_checked_with_exit_2(tmp_path: Path, base_image: str) -> None:
    done = skiff("build", "--sdk-version", "newest", "-C", str(copy_model(tmp_path)))
    assert done.returncode == 2, done.stderr
    assert "invalid Cog SDK version 'newest'" in done.stderr
    assert "Traceback" not in done.stderr
