"""Suite-wide fixtures: real registries on 127.0.0.1 and a hermetic environment per test."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import USERS, DockerConfig, RegistryServer, TokenIssuer, push_tiny_image

# Variables that would let the developer's machine leak into a test: CA bundles that httpx/ssl
# pick up, proxies that would swallow 127.0.0.1 traffic, and skiff's own knobs.
_SCRUBBED_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SKIFF_INSECURE_REGISTRIES",
    "REGISTRY_AUTH_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Per test: fresh SKIFF_CACHE_DIR, empty DOCKER_CONFIG, no inherited TLS/proxy settings."""
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))
    cache = tmp_path_factory.mktemp("skiff-cache")
    monkeypatch.setenv("SKIFF_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def docker_config(hermetic_env: Path) -> DockerConfig:
    """The (initially empty) DOCKER_CONFIG directory the autouse fixture set for this test."""
    return DockerConfig(Path(os.environ["DOCKER_CONFIG"]))


@pytest.fixture
def users() -> dict[str, str]:
    return dict(USERS)


@pytest.fixture
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


@pytest.fixture
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("registry"), users=USERS) as registry:
        yield registry


@pytest.fixture
def token_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
    with TokenIssuer(tmp_path_factory.mktemp("token-issuer"), users=USERS) as issuer:
        yield issuer


@pytest.fixture
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer
) -> Iterator[RegistryServer]:
    """Token-auth registry; its issuer is `token_registry.token_issuer` (== `token_issuer`)."""
    with RegistryServer(tmp_path_factory.mktemp("registry"), token=token_issuer) as registry:
        yield registry


@pytest.fixture
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """HTTPS registry without auth; trust `tls_registry.ca_cert` to verify it."""
    with RegistryServer(tmp_path_factory.mktemp("registry"), tls=True) as registry:
        yield registry


@pytest.fixture
def own_name() -> str:
    """This machine's host *name* (not localhost), which reaches 127.0.0.1: a stand-in for a
    registry elsewhere, for the rules that tell loopback from the rest of the network."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if name == "localhost" or address != "127.0.0.1":
        pytest.skip(f"this machine's host name {name!r} does not resolve to 127.0.0.1")
    return name


HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A copy of examples/hello to build and push."""
    path = tmp_path / "hello"
    shutil.copytree(HELLO, path)
    return path


@pytest.fixture
def registry(plain_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> RegistryServer:
    """A plain registry that also holds the (tiny) base image, under base/tiny:1."""
    push_tiny_image(plain_registry, "base/tiny", "1")
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{plain_registry.host}/base/tiny:1")
    return plain_registry
