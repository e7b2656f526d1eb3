"""A real CNCF Distribution registry (`docker-registry serve`) run as a subprocess for tests."""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .certs import TlsFiles, make_tls_files
from .token_issuer import TokenIssuer

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Fixed so upload sessions (signed with it) survive `restart()`.
HTTP_SECRET = "skiff-test-registry-secret"
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: if pytest is killed, the registry goes with it (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RegistryStartError(RuntimeError):
    pass


class RegistryServer:
    """One registry process on 127.0.0.1 with its own storage, config and log under `workdir`.

    Modes: plain (default); basic auth (`users`); token auth (`token` issuer); `tls=True`
    combines with either. Storage helpers read the filesystem driver's layout directly, so tests
    can assert on what really landed in the registry.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        token: TokenIssuer | None = None,
        tls: bool = False,
        extra_config: Mapping[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        if users and token:
            raise ValueError("choose basic auth (users) or token auth, not both")
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="registry-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "storage"
        self.root.mkdir(exist_ok=True)
        self.log_path = self.workdir / "registry.log"
        self.config_path = self.workdir / "config.json"
        self.users: dict[str, str] = dict(users or {})
        self.token_issuer = token
        self.tls_files: TlsFiles | None = make_tls_files(self.workdir / "tls") if tls else None
        self.ca_cert: Path | None = self.tls_files.ca_cert if self.tls_files else None
        self.scheme = "https" if tls else "http"
        self.htpasswd_path: Path | None = self._write_htpasswd() if self.users else None
        self._extra_config = dict(extra_config or {})
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"RegistryServer({self.url!r}, root={str(self.root)!r})"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration ----------------------------------------------------------------------

    def _write_htpasswd(self) -> Path:
        path = self.workdir / "htpasswd"
        for index, (user, password) in enumerate(self.users.items()):
            flags = "-Bbc" if index == 0 else "-Bb"  # -c creates the file, only for the first user
            subprocess.run(
                ["htpasswd", flags, str(path), user, password],
                check=True,
                capture_output=True,
            )
        return path

    def config(self) -> dict[str, Any]:
        http_section: dict[str, Any] = {"addr": self.host, "secret": HTTP_SECRET}
        if self.tls_files:
            http_section["tls"] = {
                "certificate": str(self.tls_files.cert),
                "key": str(self.tls_files.key),
            }
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                # The purger would otherwise wake up at a random time and remove uploads.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_section,
        }
        if self.htpasswd_path:
            config["auth"] = {"htpasswd": {"realm": "skiff-test", "path": str(self.htpasswd_path)}}
        elif self.token_issuer:
            config["auth"] = self.token_issuer.registry_auth_config()
        config.update(self._extra_config)
        return config

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        keep_port = self.port != 0
        for _attempt in range(3):
            if not keep_port:
                self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except RegistryStartError:
                # Another process may have taken the free port between probe and bind.
                if keep_port or "address already in use" not in self.log_tail():
                    raise
        raise RegistryStartError(f"registry could not bind a port:\n{self.log_tail()}")

    def _spawn_and_wait(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))  # YAML accepts JSON
        # REGISTRY_* variables would override the config file; don't let the caller's leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._reap()
                raise RegistryStartError(f"registry exited at start:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RegistryStartError(
            f"registry did not answer /v2/ within {START_TIMEOUT}s:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        connection: http.client.HTTPConnection
        if self.tls_files:
            context = ssl.create_default_context(cafile=str(self.tls_files.ca_cert))
            connection = http.client.HTTPSConnection(self.host, timeout=1, context=context)
        else:
            connection = http.client.HTTPConnection(self.host, timeout=1)
        try:
            connection.request("GET", "/v2/")
            return connection.getresponse().status in (200, 401)
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after STOP_TIMEOUT). Idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT)
        self._reap()

    def kill(self) -> None:
        """Die abruptly, like a crash (SIGKILL)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT)
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same port with the same storage and secret."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the work directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _reap(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- storage inspection -----------------------------------------------------------------

    @property
    def _v2(self) -> Path:
        return self.root / "docker" / "registry" / "v2"

    def _repo_dir(self, repo: str) -> Path:
        return self._v2 / "repositories" / repo

    def repositories(self) -> list[str]:
        """Repository names that have any manifests, layer links or uploads on disk."""
        base = self._v2 / "repositories"
        if not base.is_dir():
            return []
        markers = ("_manifests", "_layers", "_uploads")
        return sorted(
            path.relative_to(base).as_posix()
            for path in base.rglob("*")
            if path.is_dir()
            and not any(part.startswith("_") for part in path.relative_to(base).parts)
            and any((path / marker).is_dir() for marker in markers)
        )

    def blobs(self) -> list[str]:
        """Digests ("sha256:...") of every blob in the shared blob store."""
        base = self._v2 / "blobs" / "sha256"
        return sorted(f"sha256:{data.parent.name}" for data in base.glob("*/*/data"))

    def blob_bytes(self, digest: str) -> bytes:
        hex_ = digest.removeprefix("sha256:")
        return (self._v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data").read_bytes()

    def layers(self, repo: str) -> list[str]:
        """Blob digests linked into `repo` (what a HEAD /v2/REPO/blobs/D would find)."""
        base = self._repo_dir(repo) / "_layers" / "sha256"
        return sorted(f"sha256:{link.parent.name}" for link in base.glob("*/link"))

    def manifests(self, repo: str) -> list[str]:
        """Digests of manifests in `repo` (deleted ones lose their link file)."""
        base = self._repo_dir(repo) / "_manifests" / "revisions" / "sha256"
        return sorted(f"sha256:{link.parent.name}" for link in base.glob("*/link"))

    def tags(self, repo: str) -> dict[str, str]:
        """Tag -> manifest digest for `repo`."""
        base = self._repo_dir(repo) / "_manifests" / "tags"
        return {
            link.parent.parent.name: link.read_text().strip()
            for link in sorted(base.glob("*/current/link"))
        }

    def uploads(self, repo: str) -> list[str]:
        """Ids of upload sessions still open (directories under `_uploads`)."""
        base = self._repo_dir(repo) / "_uploads"
        if not base.is_dir():
            return []
        return sorted(path.name for path in base.iterdir() if path.is_dir())

    def open_uploads(self, repo: str) -> list[str]:
        """Upload sessions still usable. Distribution 2.8 deletes a cancelled session's data and
        start time but leaves its empty hash-state folder behind, so a folder alone proves
        nothing."""
        base = self._repo_dir(repo) / "_uploads"
        return [upload for upload in self.uploads(repo) if (base / upload / "startedat").exists()]


# -- seeding: a tiny OCI image pushed with the real skopeo ------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class TinyImage:
    """An OCI image layout on disk with one small layer, and the digests skopeo will push."""

    layout: Path
    manifest: bytes
    manifest_digest: str
    config_digest: str
    layer_digest: str

    @property
    def blob_digests(self) -> list[str]:
        return sorted({self.config_digest, self.layer_digest})


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _layer_tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # deterministic digests
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_tiny_image(
    layout: Path, files: Mapping[str, bytes] | None = None, *, tag: str = "latest"
) -> TinyImage:
    """Write an OCI layout holding one image whose single layer contains `files`.

    Different `files` give different digests, so tests can push distinct images.
    """
    files = files if files is not None else {"hello.txt": b"hello from skiff tests\n"}
    tar = _layer_tar(files)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / _sha256(blob).removeprefix("sha256:")).write_bytes(blob)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return TinyImage(layout, manifest, _sha256(manifest), _sha256(config), _sha256(layer))


def skopeo_push(
    image: TinyImage,
    registry: RegistryServer,
    repo: str,
    tag: str = "latest",
    *,
    user: str | None = None,
    password: str | None = None,
) -> None:
    """Push `image` to REGISTRY/REPO:TAG with the real skopeo (any auth mode, http or https)."""
    with tempfile.TemporaryDirectory(prefix="skopeo-") as scratch:
        # An auth file, not --dest-creds, so the password is not on a command line.
        authfile = Path(scratch) / "auth.json"
        auths = {}
        if user is not None and password is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            auths[registry.host] = {"auth": token}
        authfile.write_text(json.dumps({"auths": auths}))
        source_tag = json.loads((image.layout / "index.json").read_text())["manifests"][0][
            "annotations"
        ]["org.opencontainers.image.ref.name"]
        command = [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"--dest-authfile={authfile}",
            *([] if auths else ["--dest-no-creds"]),
            f"oci:{image.layout}:{source_tag}",
            f"docker://{registry.host}/{repo}:{tag}",
        ]
        env = {**os.environ, "TMPDIR": scratch}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(
            f"skopeo push to {registry.host}/{repo}:{tag} failed:\n{result.stderr}\n"
            f"registry log:\n{registry.log_tail()}"
        )


def push_tiny_image(
    registry: RegistryServer,
    repo: str,
    tag: str = "latest",
    *,
    user: str | None = None,
    password: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> TinyImage:
    """Build a tiny image in a scratch layout and push it; returns its digests for assertions."""
    layout = Path(tempfile.mkdtemp(prefix="tiny-image-", dir=registry.workdir))
    image = make_tiny_image(layout, files)
    skopeo_push(image, registry, repo, tag, user=user, password=password)
    return image
