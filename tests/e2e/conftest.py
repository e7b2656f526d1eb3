"""End-to-end fixtures: a registry for the whole session, a real Python base image pushed to
it, and the environment `skiff push` runs in to build on that base."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support import RegistryServer, skopeo_push
from support.baseimage import BaseImageError, python_base_layout

BASE_REPO, BASE_TAG = "e2e/python", "bookworm"
# The developer's settings must not reach the skiff under test (see the suite's hermetic_env).
_SCRUBBED_PREFIXES = ("SKIFF_", "SSL_CERT_", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(scope="session")
def e2e_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("e2e-registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def python_base(e2e_registry: RegistryServer) -> str:
    """Reference of a Debian bookworm + python3 image in `e2e_registry` (made once per machine).

    Without it there is nothing to test: a failure here fails the tests, it does not skip them.
    """
    try:
        image = python_base_layout()
    except BaseImageError as exc:
        pytest.fail(f"cannot make the e2e base image: {exc}", pytrace=False)
    skopeo_push(image, e2e_registry, BASE_REPO, BASE_TAG)
    return f"{e2e_registry.host}/{BASE_REPO}:{BASE_TAG}"


@pytest.fixture(scope="session")
def skiff_env(tmp_path_factory: pytest.TempPathFactory, python_base: str) -> dict[str, str]:
    """The environment `skiff push` runs in: the test base image, a cache shared by the
    session's builds (the base is pulled once), no credentials, no proxies."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name.lower() not in _PROXIES
    }
    env.update(
        SKIFF_BASE_IMAGE=python_base,
        SKIFF_CACHE_DIR=str(tmp_path_factory.mktemp("e2e-skiff-cache")),
        DOCKER_CONFIG=str(tmp_path_factory.mktemp("e2e-docker-config")),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env
