"""``skiff login``: verify credentials against the registry, then store them like docker login."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from skiff.auth import dockerconfig
from skiff.auth.credentials import Credentials
from skiff.errors import DestinationRejected, InvalidInput
from skiff.reference import DOCKER_HUB, Repository
from skiff.registry.client import RegistryClient
from skiff.registry.errors import RegistryError, TokenRejected
from skiff.registry.transport import TransportOptions

_HOST = re.compile(
    r"^(?:[a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?(?::\d+)?$"
    r"|^\[[0-9a-f:.]+\](?::\d+)?$"
)
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "hub.docker.com"}


@dataclass(frozen=True)
class LoginResult:
    registry: str
    username: str
    stored_in: Path


def normalise_registry(text: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``Host:5000/`` -> ``host:5000``."""
    host = text.strip()
    for prefix in ("https://", "http://"):
        if host.lower().startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0].lower()
    if host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    if not host or not _HOST.match(host):
        raise InvalidInput(
            f"{text!r} is not a registry host",
            "give a host name with an optional port, e.g. ghcr.io or localhost:5000",
        )
    return host


def login(
    registry_text: str, username: str, password: str, options: TransportOptions | None = None
) -> LoginResult:
    """Check that the registry accepts ``username``/``password``, then save them (mode 0600)."""
    registry = normalise_registry(registry_text)
    if not username:
        raise InvalidInput("a username is required", "pass it with -u USERNAME")
    if not password:
        raise InvalidInput("the password is empty", "pipe it in with --password-stdin")
    creds = Credentials(username=username, password=password, source="skiff login")
    client = RegistryClient(Repository(registry, "_"), creds, actions=(), options=options)
    with client:
        try:
            client.ping()
            response = client.send("GET", f"{client.base_url}/v2/", what="logging in")
        except TokenRejected:
            raise DestinationRejected(
                f"{registry} rejected the username {username!r} or its password",
                "check the user name and the password or access token",
            ) from None
        except RegistryError as exc:
            raise DestinationRejected(exc.message, exc.hint) from None
        if response.status_code == 401:
            raise DestinationRejected(
                f"{registry} rejected the username {username!r} or its password",
                "check the user name and the password or access token",
            )
        if response.status_code != 200:
            raise DestinationRejected(
                f"{registry} answered HTTP {response.status_code} to the login"
            )
    path = dockerconfig.store(registry, username, password)
    return LoginResult(registry, username, path)
