"""``skiff push`` of the example model to real registries, run as a user would (the CLI)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import USERS, DockerConfig, RegistryServer, push_tiny_image

SKIFF = Path(sys.executable).parent / "skiff"
PINNED = re.compile(r"^(?P<repo>\S+)@(?P<digest>sha256:[0-9a-f]{64})$")


def skiff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )


def push_json(ref: str, model: Path) -> dict[str, Any]:
    done = skiff("push", ref, "-C", str(model), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def by_role(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    layers = {layer["role"]: layer for layer in summary["layers"]}
    assert len(layers) == len(summary["layers"]), "one layer per role in the example"
    return layers


def skopeo_inspect(registry: RegistryServer, ref: str) -> dict[str, Any]:
    done = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/{ref}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def cached_blobs(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("blobs/sha256/*") if path.is_file()]


def test_pushed_image_is_readable_by_skopeo_with_separate_layers(
    registry: RegistryServer, model: Path
) -> None:
    ref = f"{registry.host}/demo/hello:v1"
    done = skiff("push", ref, "-C", str(model))
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    match = PINNED.match(last)
    assert match, done.stdout
    assert match["repo"] == f"{registry.host}/demo/hello"
    digest = match["digest"]

    assert registry.tags("demo/hello") == {"v1": digest}
    info = skopeo_inspect(registry, "demo/hello:v1")
    assert info["Digest"] == digest
    layers = info["Layers"]
    assert len(layers) == 4 and len(set(layers)) == 4  # base, runtime, weights, code
    assert set(layers) <= set(registry.layers("demo/hello"))
    assert "Traceback" not in done.stderr


def test_json_summary_and_base_layers_mounted_from_the_same_registry(
    registry: RegistryServer, model: Path
) -> None:
    summary = push_json(f"{registry.host}/demo/hello:v1", model)
    assert summary["ok"] is True
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", summary["digest"])
    assert summary["pinned"] == f"{registry.host}/demo/hello@{summary['digest']}"
    layers = by_role(summary)
    assert list(layers) == ["base", "runtime", "weights", "code", "config"]
    for layer in summary["layers"]:
        assert layer["status"] in ("uploaded", "skipped", "mounted")
        assert isinstance(layer["bytes_uploaded"], int) and isinstance(layer["size"], int)
    # The base image lives in base/tiny of this registry: linked, not sent again.
    assert layers["base"]["status"] == "mounted"
    assert layers["base"]["bytes_uploaded"] == 0
    weights = layers["weights"]
    assert weights["status"] == "uploaded"
    assert weights["bytes_uploaded"] == weights["size"] > 3 * 1024 * 1024
    assert summary["bytes_uploaded"] == sum(layer["bytes_uploaded"] for layer in summary["layers"])
    assert registry.tags("demo/hello") == {"v1": summary["digest"]}


def test_repush_without_change_uploads_nothing(registry: RegistryServer, model: Path) -> None:
    first = push_json(f"{registry.host}/demo/hello:v1", model)
    again = push_json(f"{registry.host}/demo/hello:v1", model)
    assert again["digest"] == first["digest"]
    assert again["bytes_uploaded"] == 0
    assert {layer["status"] for layer in again["layers"]} == {"skipped"}


def test_repush_after_a_one_line_code_change_uploads_under_1_mb(
    registry: RegistryServer, model: Path
) -> None:
    first = push_json(f"{registry.host}/demo/hello:v1", model)
    with (model / "predict.py").open("a") as handle:
        handle.write("# tuned\n")
    second = push_json(f"{registry.host}/demo/hello:v2", model)
    assert second["digest"] != first["digest"]
    assert 0 < second["bytes_uploaded"] < 1_000_000
    sent = {role for role, layer in by_role(second).items() if layer["status"] == "uploaded"}
    assert sent == {"code", "config"}
    assert by_role(second)["weights"]["status"] == "skipped"
    assert registry.tags("demo/hello") == {"v1": first["digest"], "v2": second["digest"]}


def test_push_without_a_reference_uses_image_from_cog_yaml(
    registry: RegistryServer, model: Path
) -> None:
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    spec["image"] = f"{registry.host}/demo/from-yaml"
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    done = skiff("push", "-C", str(model))
    assert done.returncode == 0, done.stderr
    match = PINNED.match(done.stdout.strip().splitlines()[-1])
    assert match and match["repo"] == f"{registry.host}/demo/from-yaml"
    assert registry.tags("demo/from-yaml") == {"latest": match["digest"]}


def test_invalid_cog_yaml_exits_2_and_pushes_nothing(
    registry: RegistryServer, model: Path, hermetic_env: Path
) -> None:
    (model / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredictt: "predict.py:P"\n')
    done = skiff("push", f"{registry.host}/demo/hello:v1", "-C", str(model))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "predictt" in done.stderr
    assert "Traceback" not in done.stderr
    # cog.yaml is read after the destination's checks: their dry push leaves nothing in it.
    assert registry.manifests("demo/hello") == [] and registry.layers("demo/hello") == []
    assert cached_blobs(hermetic_env) == []


def test_forbidden_destination_exits_3_before_anything_is_built(
    token_registry: RegistryServer,
    docker_config: DockerConfig,
    model: Path,
    hermetic_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # alice owns alice/*; bob/model is bob's. The base is in the same registry, readable by alice.
    push_tiny_image(token_registry, "alice/base", "1", user="alice", password=USERS["alice"])
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{token_registry.host}/alice/base:1")
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])

    denied = skiff("push", f"{token_registry.host}/bob/model:v1", "-C", str(model))
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "bob/model" in denied.stderr
    assert denied.stdout == ""
    assert "Traceback" not in denied.stderr
    assert cached_blobs(hermetic_env) == []  # not even the base image was pulled
    assert "bob/model" not in token_registry.repositories()

    # The same model to alice's own repository: built, cached, pushed, base layer mounted.
    allowed = skiff("push", f"{token_registry.host}/alice/model:v1", "-C", str(model), "--json")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    summary = json.loads(allowed.stdout)
    assert by_role(summary)["base"]["status"] == "mounted"
    assert cached_blobs(hermetic_env)
    assert token_registry.tags("alice/model") == {"v1": summary["digest"]}


# -- the pipeline: layers go up while the build goes on -------------------------------------------


def tiny_wheel() -> bytes:
    """A pure-Python wheel, ``gatedpkg 1.0``, made here (nothing from PyPI)."""
    files = {
        "gatedpkg/__init__.py": b"VALUE = 42\n",
        "gatedpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: gatedpkg\nVersion: 1.0\n",
        "gatedpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }

    def hashed(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={hashed(data)},{len(data)}\n" for name, data in files.items())
    record += "gatedpkg-1.0.dist-info/RECORD,,\n"
    files["gatedpkg-1.0.dist-info/RECORD"] = record.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


class GatedWheel:
    """Serves one wheel over HTTP, but only once ``open()`` is called: uv waits on it."""

    name = "gatedpkg-1.0-py3-none-any.whl"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.asked = threading.Event()
        wheel = tiny_wheel()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def do_GET(self) -> None:
                self._answer(with_body=True)

            def _answer(self, with_body: bool) -> None:
                outer.asked.set()
                outer.gate.wait(timeout=120)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(wheel)))
                self.end_headers()
                if with_body:
                    self.wfile.write(wheel)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{self.name}"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def gated_wheel() -> Iterator[GatedWheel]:
    wheel = GatedWheel()
    yield wheel
    wheel.close()


def test_weights_are_uploaded_while_the_dependencies_are_still_installing(
    registry: RegistryServer, model: Path, gated_wheel: GatedWheel
) -> None:
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    spec["build"]["python_packages"] = [f"gatedpkg @ {gated_wheel.url}"]
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    weights_size = (model / "weights" / "table.bin").stat().st_size
    command = [str(SKIFF), "push", f"{registry.host}/demo/hello:v1", "-C", str(model), "--json"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    ) as process:
        try:
            # uv is blocked on the wheel, so the dependency layer cannot exist yet: the weights
            # must reach the registry anyway, and no manifest may.
            deadline = time.monotonic() + 60
            weights_arrived = False
            while time.monotonic() < deadline and process.poll() is None:
                sizes = [len(registry.blob_bytes(d)) for d in registry.layers("demo/hello")]
                if any(size > weights_size for size in sizes):
                    weights_arrived = True
                    break
                time.sleep(0.05)
            assert process.poll() is None, process.communicate()
            assert weights_arrived, "the weights were not uploaded while uv was waiting"
            assert registry.manifests("demo/hello") == []
        finally:
            gated_wheel.gate.set()
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stdout + stderr
    assert gated_wheel.asked.is_set()  # uv did wait on the gate
    summary = json.loads(stdout)
    assert by_role(summary)["deps"]["status"] == "uploaded"
    assert registry.tags("demo/hello") == {"v1": summary["digest"]}


def test_a_build_failure_during_the_push_exits_4_and_leaves_no_manifest(
    registry: RegistryServer, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # uv would retry a refused connection for 10 s
    spec = yaml.safe_load((model / "cog.yaml").read_text())
    # Nothing listens on port 1: uv fails, after the other layers were built (and sent).
    spec["build"]["python_packages"] = ["nopkg @ http://127.0.0.1:1/nopkg-1.0-py3-none-any.whl"]
    (model / "cog.yaml").write_text(yaml.safe_dump(spec))
    done = skiff("push", f"{registry.host}/demo/hello:v1", "-C", str(model))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "uv" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert registry.manifests("demo/hello") == []
    assert registry.tags("demo/hello") == {}
