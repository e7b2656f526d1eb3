"""Fixtures of the hardening suite (issue 6): a registry holding a tiny base image, and this
machine's host name for the "not loopback" cases."""

from __future__ import annotations

import pytest

from support import RegistryServer, push_tiny_image


@pytest.fixture
def registry(plain_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> RegistryServer:
    """A plain registry that also holds the (tiny) base image, under base/tiny:1."""
    push_tiny_image(plain_registry, "base/tiny", "1")
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{plain_registry.host}/base/tiny:1")
    return plain_registry
