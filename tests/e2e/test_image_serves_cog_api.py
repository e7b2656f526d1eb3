"""The image `skiff push` makes is a Cog image: Cog's own runtime (coglet) serves it, end to end.

Models are built on a Debian + python3 base, pushed to a real registry, pulled back with skopeo,
unpacked with umoci and run with bwrap on the host's loopback, with the command, working directory
and environment from the image config. Then they are driven over HTTP as a Cog client would, and
what they answer is what coglet answers (the pinned version is checked on /health-check).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from skiff.image.options import DEFAULT_SDK_VERSION
from support import RegistryServer
from support.registries import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HELLO = REPO_ROOT / "examples" / "hello"
MODELS = Path(__file__).parent / "models"
SLOW = MODELS / "slow"
SKIFF = str(Path(sys.executable).parent / "skiff")
COMMAND_TIMEOUT = 300
READY_TIMEOUT = 30.0
# Issue 4 asks for a server listening in under 1 s, before setup(). Measured here from the
# bwrap spawn to the first answered /health-check (so sandbox set-up and polling count too);
# the bound is doubled so a loaded 2-core CI machine does not turn it into a flaky test.
STARTUP_TARGET, STARTUP_BOUND = 1.0, 2.0
# A cold run makes the base image first (debootstrap, ~2 min): more than the suite's default.
pytestmark = pytest.mark.timeout(900)
TERMINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class UnpackedImage:
    """A pushed image, pulled back and unpacked: its root filesystem and its OCI config."""

    reference: str
    rootfs: Path
    config: dict[str, Any]  # the image config's "config" object: Env, Cmd, WorkingDir, Labels

    @property
    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.get("Env") or [])
        return {name: value for name, _, value in pairs}

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})


def run(
    command: list[str], what: str, timeout: float = COMMAND_TIMEOUT, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure, fail the test with its output (not a bare CalledProcessError)."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
            pytrace=False,
        )
    return result


@pytest.fixture(scope="module")
def model_image(
    tmp_path_factory: pytest.TempPathFactory,
    e2e_registry: RegistryServer,
    skiff_env: dict[str, str],
) -> Iterator[Callable[[Path, str], UnpackedImage]]:
    """Build and push a model folder with `skiff push`, then pull and unpack what landed."""
    scratch = tmp_path_factory.mktemp("e2e-images")  # ~300 MB a model: removed at the end
    pulled = scratch / "layout"  # one layout for all: the base layer is pulled once

    def push_pull_unpack(folder: Path, name: str) -> UnpackedImage:
        reference = f"{e2e_registry.host}/e2e/{name}:latest"
        run([SKIFF, "push", reference, "-C", str(folder)], f"skiff push of {folder}", env=skiff_env)
        run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--src-no-creds",
                f"docker://{reference}",
                f"oci:{pulled}:{name}",
            ],
            f"skopeo pull of {reference}",
        )
        # `raw unpack`: the root filesystem only, without the mtree manifest `unpack` hashes.
        rootfs = scratch / f"rootfs-{name}"
        run(
            ["umoci", "raw", "unpack", "--rootless", "--image", f"{pulled}:{name}", str(rootfs)],
            f"umoci unpack of {reference}",
        )
        return UnpackedImage(reference, rootfs, _image_config(pulled, name))

    yield push_pull_unpack
    shutil.rmtree(scratch, ignore_errors=True)


def _image_config(layout: Path, tag: str) -> dict[str, Any]:
    def blob(digest: str) -> Any:
        return json.loads(
            (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        )

    index = json.loads((layout / "index.json").read_text())
    (entry,) = (
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    config = blob(blob(entry["digest"])["config"]["digest"])
    assert config["os"] == "linux" and config["architecture"] == "amd64", config
    inner: dict[str, Any] = config["config"]
    return inner


class Container:
    """An unpacked image run with bwrap: own pid namespace, host network, the image's config."""

    def __init__(self, image: UnpackedImage, log: Path) -> None:
        self.image = image
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.first_answer_s: float | None = None
        self.first_status: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        config = self.image.config
        command = ["bwrap", "--bind", str(self.image.rootfs), "/", "--proc", "/proc"]
        command += ["--dev", "/dev", "--tmpfs", "/tmp", "--unshare-pid", "--die-with-parent"]
        command += ["--clearenv"]
        env = {**self.image.env, "PORT": str(self.port)}
        for name, value in env.items():
            command += ["--setenv", name, value]
        command += ["--chdir", config.get("WorkingDir") or "/", "--", *self.image.command]
        # Cog's server listens on every address by default: loopback only, as every test server.
        return [*command, "--host", "127.0.0.1"]

    def start(self) -> None:
        with self.log.open("wb") as out:
            started = time.monotonic()
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        while self.first_status is None:
            self._check_alive()
            status = self._health_status()
            if status is not None:
                self.first_answer_s = time.monotonic() - started
                self.first_status = status
            elif time.monotonic() - started > READY_TIMEOUT:
                self._fail("the server did not answer /health-check")
            else:
                time.sleep(0.01)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while (status := self._health_status()) != "READY":
            self._check_alive()
            if status == "SETUP_FAILED":
                self._fail("setup failed")
            if time.monotonic() > deadline:
                self._fail(f"not READY after {READY_TIMEOUT} s (last status {status})")
            time.sleep(0.05)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def _health_status(self) -> str | None:
        try:
            response = httpx.get(f"{self.url}/health-check", timeout=1)
        except httpx.TransportError:
            return None
        status: str = response.json()["status"]
        return status

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._fail(f"the server exited with {self._process.returncode}")

    def _fail(self, what: str) -> None:
        self.stop()
        pytest.fail(f"{what}; command {self.command()}\nlog:\n{self.log_text()}", pytrace=False)


class WebhookReceiver:
    """A local HTTP endpoint that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: queue.Queue[dict[str, Any]] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.put(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first received body for which `done` holds (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no matching webhook call within {timeout} s", pytrace=False)
            if done(body):
                return body

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def running(
    model_image: Callable[[Path, str], UnpackedImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Path, str], Container]]:
    """Start containers of model folders (stopped at the end of the module)."""
    containers: list[Container] = []

    def start(folder: Path, name: str) -> Container:
        image = model_image(folder, name)
        container = Container(image, tmp_path_factory.mktemp(f"run-{name}") / "server.log")
        containers.append(container)
        container.start()
        return container

    yield start
    for container in containers:
        container.stop()


@pytest.fixture(scope="module")
def hello(running: Callable[[Path, str], Container]) -> Container:
    container = running(HELLO, "hello")
    container.wait_ready()
    return container


@pytest.fixture(scope="module")
def slow(running: Callable[[Path, str], Container]) -> Container:
    """The slow model, as just started: its setup() is still running."""
    return running(SLOW, "slow")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_server_answers_within_a_second_while_setup_still_runs(slow: Container) -> None:
    assert slow.first_status == "STARTING", slow.log_text()
    assert slow.first_answer_s is not None
    print(f"first /health-check answered {slow.first_answer_s:.3f} s after the bwrap spawn")
    assert slow.first_answer_s < STARTUP_BOUND, (
        f"first /health-check answered {slow.first_answer_s:.2f} s after start "
        f"(target {STARTUP_TARGET} s)"
    )
    slow.wait_ready()


def test_the_image_config_is_cogs_contract(hello: Container) -> None:
    image = hello.image
    assert image.command == ["python", "-m", "cog.server.http"]
    assert image.config["WorkingDir"] == "/src"
    assert image.config["ExposedPorts"] == {"5000/tcp": {}}
    assert image.env["COG_PREDICT_TYPE_STUB"] == "predict.py:Predictor"
    assert image.env["PYTHONUNBUFFERED"] == "1"
    assert "COG_PREDICTOR" not in image.env and "COG_TRAIN_TYPE_STUB" not in image.env
    assert image.env["PATH"].startswith("/opt/skiff/bin:")  # the image's `python` comes first
    assert not (image.rootfs / "opt" / "skiff" / "python").exists()  # no runtime of skiff's own
    labels = image.labels
    assert labels["run.cog.version"] == DEFAULT_SDK_VERSION
    assert labels["run.cog.has_init"] == "true"
    assert json.loads(labels["run.cog.config"])["predict"] == "predict.py:Predictor"
    freeze = labels["run.cog.pip_freeze"].splitlines()
    assert f"cog=={DEFAULT_SDK_VERSION}" in freeze and f"coglet=={DEFAULT_SDK_VERSION}" in freeze
    # examples/hello is in skiff's repository: the image names the commit it was built from.
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_health_names_the_pinned_coglet_and_the_images_python(hello: Container) -> None:
    health = httpx.get(f"{hello.url}/health-check").json()
    assert health["status"] == "READY"
    assert health["setup"]["status"] == "succeeded"
    assert health["version"]["coglet"] == DEFAULT_SDK_VERSION
    assert health["version"]["python_sdk"] == DEFAULT_SDK_VERSION
    assert health["version"]["python"].startswith("3.11.")  # Debian's, not the host's venv


def test_openapi_is_the_schema_file_and_the_label(hello: Container) -> None:
    response = httpx.get(f"{hello.url}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    in_file = json.loads((hello.image.rootfs / "src" / ".cog" / "openapi_schema.json").read_text())
    assert schema == in_file == json.loads(hello.image.labels["run.cog.openapi_schema"])
    inputs = schema["components"]["schemas"]["Input"]
    assert inputs["required"] == ["text"]
    repeat = inputs["properties"]["repeat"]
    assert (repeat["type"], repeat["default"], repeat["minimum"], repeat["maximum"]) == (
        "integer",
        1,
        1,
        5,
    )


def test_sync_prediction_succeeds_with_the_weights_in_the_image(hello: Container) -> None:
    table = (HELLO / "weights" / "table.bin").read_bytes()
    score = sum(table[(i * 256 + b) % len(table)] for i, b in enumerate(b"hi"))
    fingerprint = hashlib.sha256(table).hexdigest()[:12]

    response = httpx.post(
        f"{hello.url}/predictions", json={"input": {"text": "hi", "repeat": 3}}, timeout=30
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded", body
    assert body["output"] == f"hihihi (score {score}, weights {fingerprint})"
    assert body["metrics"]["predict_time"] >= 0
    assert body["id"]


def test_ill_typed_input_is_422_and_malformed_json_is_400(hello: Container) -> None:
    for repeat, words in (("3", "is not of type"), (99, "maximum")):
        response = httpx.post(
            f"{hello.url}/predictions", json={"input": {"text": "hi", "repeat": repeat}}
        )
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "input", "repeat"]
        assert words in error["msg"]
    malformed = httpx.post(
        f"{hello.url}/predictions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400


def test_async_prediction_reports_to_the_webhook(
    hello: Container, webhook: WebhookReceiver
) -> None:
    response = httpx.post(
        f"{hello.url}/predictions",
        json={"id": "e2e-async", "input": {"text": "yo"}, "webhook": webhook.url},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )

    assert response.status_code == 202, response.text
    assert response.json()["id"] == "e2e-async"
    first = webhook.wait_for(lambda body: True, timeout=15)
    assert (first["id"], first["status"]) == ("e2e-async", "processing")  # Cog's start event
    done = webhook.wait_for(lambda body: body["status"] in TERMINAL, timeout=15)
    assert done["id"] == "e2e-async"
    assert done["status"] == "succeeded", done
    assert done["output"].startswith("yo (score ")


def test_running_prediction_is_canceled(slow: Container, webhook: WebhookReceiver) -> None:
    slow.wait_ready()
    response = httpx.post(
        f"{slow.url}/predictions",
        json={
            "id": "e2e-cancel",
            "input": {"seconds": 60},
            "webhook": webhook.url,
            "webhook_events_filter": ["logs", "completed"],
        },
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    # The predictor prints "working" once inside predict(): from then on it is running.
    webhook.wait_for(lambda body: "working" in (body.get("logs") or ""), timeout=15)
    assert httpx.get(f"{slow.url}/health-check").json()["status"] == "BUSY"

    started = time.monotonic()
    canceled = httpx.post(f"{slow.url}/predictions/e2e-cancel/cancel", timeout=10)

    assert canceled.status_code == 200, canceled.text
    done = webhook.wait_for(lambda body: body["status"] in TERMINAL, timeout=15)
    assert done["status"] == "canceled", done
    assert time.monotonic() - started < 5  # not the 60 s the prediction asked for
    assert httpx.post(f"{slow.url}/predictions/nope/cancel", timeout=10).status_code == 404
    deadline = time.monotonic() + 10
    while httpx.get(f"{slow.url}/health-check").json()["status"] != "READY":
        assert time.monotonic() < deadline, "still busy after the cancel"
        time.sleep(0.05)
