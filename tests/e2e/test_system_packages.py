"""system_packages and run steps, end to end: `skiff push` of examples/with-system-packages.

On the Debian base made with debootstrap: apt installs jq from deb.debian.org inside bwrap, the
`run:` steps become layers, the pushed image is pulled back with skopeo, unpacked with umoci (an
independent reader of skiff's layers and whiteouts) and run with bwrap. A second push runs no
step; a secret a step used is in no layer.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_image_serves_cog_api import run as run_tool

from skiff.image.steps import is_volatile
from support import RegistryServer

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "with-system-packages"
SKIFF = str(Path(sys.executable).parent / "skiff")
SECRET = "e2e-secret-6b1d94c07f2e-must-not-ship"
COMMAND_TIMEOUT = 600
pytestmark = pytest.mark.timeout(900)  # a cold run makes the base image first (debootstrap)

# Extra steps for the test: one reads a secret, one writes random bytes. If the second push ran
# any step again, the random bytes (and so the image digest) would change.
EXTRA_STEPS = [
    {
        "command": "test -s /run/secrets/api_token"
        " && sha256sum /run/secrets/api_token | cut -c1-16 > /opt/filters/token-fingerprint",
        "mounts": [{"type": "secret", "id": "api_token", "target": "/run/secrets/api_token"}],
    },
    "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /opt/filters/nonce",
]


def run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The e2e harness's ``run``, with the longer timeout that apt steps need."""
    return run_tool(command, what, timeout=COMMAND_TIMEOUT, **kwargs)


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str
    report: dict[str, Any]
    layout: Path  # pulled back with skopeo
    rootfs: Path  # unpacked with umoci
    env: dict[str, str]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("e2e-system-packages")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def secret_file(scratch: Path) -> Path:
    path = scratch / "api_token.txt"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture(scope="module")
def model(scratch: Path) -> Path:
    folder = scratch / "with-system-packages"
    shutil.copytree(EXAMPLE, folder)
    cog = yaml.safe_load((folder / "cog.yaml").read_text())
    cog["build"]["run"] += EXTRA_STEPS
    (folder / "cog.yaml").write_text(yaml.safe_dump(cog))
    return folder


def skiff_push(
    model: Path, reference: str, secret_file: Path, env: dict[str, str]
) -> dict[str, Any]:
    result = run(
        [
            SKIFF,
            "push",
            reference,
            "-C",
            str(model),
            "--json",
            "--secret",
            f"id=api_token,src={secret_file}",
        ],
        "skiff push",
        env=env,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def pushed(
    model: Path,
    scratch: Path,
    secret_file: Path,
    e2e_registry: RegistryServer,
    skiff_env: dict[str, str],
) -> Pushed:
    reference = f"{e2e_registry.host}/e2e/with-system-packages:latest"
    report = skiff_push(model, reference, secret_file, skiff_env)
    layout = scratch / "pulled"
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{reference}",
            f"oci:{layout}:sys",
        ],
        "skopeo pull",
    )
    rootfs = scratch / "rootfs"
    run(
        ["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:sys", str(rootfs)],
        "umoci unpack",
    )
    config = _config(layout)
    env = dict(item.partition("=")[::2] for item in config["config"].get("Env") or [])
    return Pushed(reference, report["digest"], report, layout, rootfs, env)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _manifest(layout: Path) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    manifest: dict[str, Any] = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    return manifest


def _config(layout: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(_blob(layout, _manifest(layout)["config"]["digest"]))
    return config


def in_image(pushed: Pushed, *command: str, stdin: str | None = None) -> str:
    """Runs a command in the unpacked image with bwrap, with the image's environment."""
    args = ["bwrap", "--bind", str(pushed.rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    args += ["--tmpfs", "/tmp", "--unshare-pid", "--die-with-parent", "--clearenv"]
    for name, value in pushed.env.items():
        args += ["--setenv", name, value]
    args += ["--chdir", "/src", "--", *command]
    return run(args, f"{command[0]} in the image", input=stdin).stdout


def test_image_has_the_system_package_and_the_steps_output(pushed: Pushed) -> None:
    roles = [layer["role"] for layer in pushed.report["layers"] if layer["role"] != "config"]
    # Cog's order: base, the apt step, Cog's runtime (no Python deps), the three run steps over
    # it, then the code.
    assert roles == ["base", "system", "runtime", "run", "run", "run", "code"], roles
    assert in_image(pushed, "jq", "--version").startswith("jq-1.")
    assert in_image(pushed, "cat", "/opt/filters/total.jq") == "[.items[].price] | add\n"
    assert (pushed.rootfs / "opt/filters/token-fingerprint").stat().st_size > 0
    # apt's package lists were removed in the same step, so they are in no layer.
    assert not any((pushed.rootfs / "var/lib/apt/lists").glob("*Packages*"))
    # The model itself, through Cog's runtime in the image, with the image's `python`.
    script = (
        "from predict import Predictor\n"
        "p = Predictor(); p.setup()\n"
        'print(p.predict(document=\'{"items": [{"price": 2}, {"price": 3.5}]}\'))\n'
    )
    out = in_image(pushed, "python", "-c", script)
    assert out.startswith("total 5.5 (jq-1."), out


def test_secret_is_in_no_layer(pushed: Pushed) -> None:
    secret = SECRET.encode()
    layers = _manifest(pushed.layout)["layers"]
    assert len(layers) == 7
    for layer in layers:
        data = _blob(pushed.layout, layer["digest"])
        if layer["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        assert secret not in data, f"the secret is in layer {layer['digest']}"
    assert secret not in _blob(pushed.layout, _manifest(pushed.layout)["config"]["digest"])
    # The step did read it (its fingerprint is in the image), and no mount point was left.
    assert not (pushed.rootfs / "run/secrets").exists()


def test_second_push_runs_no_step(
    pushed: Pushed, model: Path, secret_file: Path, skiff_env: dict[str, str]
) -> None:
    again = skiff_push(model, pushed.reference, secret_file, skiff_env)
    # A step that ran again would have written new random bytes: another layer digest.
    # (Only the layers up to the steps are compared: the runtime layer is made from skiff's
    # own source tree, which may change between two pushes on a developer's machine.)
    steps = {"base", "system", "run"}
    before = [layer for layer in pushed.report["layers"] if layer["role"] in steps]
    after = [layer for layer in again["layers"] if layer["role"] in steps]
    assert [(x["role"], x["digest"]) for x in after] == [(x["role"], x["digest"]) for x in before]
    assert all(x["bytes_uploaded"] == 0 for x in after)


def test_missing_secret_is_an_input_error_before_any_work(
    model: Path, e2e_registry: RegistryServer, skiff_env: dict[str, str]
) -> None:
    reference = f"{e2e_registry.host}/e2e/with-system-packages:no-secret"
    result = subprocess.run(
        [SKIFF, "build", "-C", str(model), "-t", reference],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=skiff_env,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "needs the secret 'api_token'" in result.stderr
    assert "--secret id=api_token,src=FILE" in result.stderr


def test_same_cog_yaml_on_an_empty_cache_gives_the_same_system_layer(
    pushed: Pushed,
    model: Path,
    secret_file: Path,
    skiff_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A CI machine with an empty cache: apt runs again (new package caches, logs, dpkg's
    backups, all different), yet the system-packages layer and the first run step's layer have
    the same digests, so nothing of them is uploaded again."""
    env = {**skiff_env, "SKIFF_CACHE_DIR": str(tmp_path / "empty-cache")}
    again = skiff_push(model, pushed.reference.replace(":latest", ":again"), secret_file, env)

    def first_layers(report: dict[str, Any]) -> list[tuple[str, str]]:
        layers = [(x["role"], x["digest"]) for x in report["layers"]]
        return [x for x in layers if x[0] in ("system", "run")][:2]

    assert first_layers(again) == first_layers(pushed.report)
    assert [x[0] for x in first_layers(again)] == ["system", "run"]
    system = next(x for x in again["layers"] if x["role"] == "system")
    assert system["bytes_uploaded"] == 0
    # The volatile files were made by apt, and none is in the layer.
    names = _layer_names(pushed.layout, system["digest"])
    assert "var/lib/dpkg/status" in names and "usr/bin/jq" in names
    volatile = [n for n in names if is_volatile(n)]
    assert volatile == [], volatile
    assert not any(n.startswith("var/cache/apt/archives/") and n.endswith(".deb") for n in names)


def _layer_names(layout: Path, digest: str) -> list[str]:
    data = _blob(layout, digest)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()
