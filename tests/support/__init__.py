"""Real test infrastructure: a Distribution registry subprocess, a token issuer, TLS material."""

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from .certs import TlsFiles, libtrust_key_id, make_tls_files
from .registries import (
    RegistryServer,
    RegistryStartError,
    TinyImage,
    make_tiny_image,
    push_tiny_image,
    skopeo_push,
)
from .token_issuer import Access, TokenIssuer, TokenRequest

__all__ = [
    "USERS",
    "Access",
    "DockerConfig",
    "RegistryServer",
    "RegistryStartError",
    "TinyImage",
    "TlsFiles",
    "TokenIssuer",
    "TokenRequest",
    "libtrust_key_id",
    "make_tiny_image",
    "make_tls_files",
    "push_tiny_image",
    "skopeo_push",
]

# The accounts every auth-enabled fixture knows (basic htpasswd and token issuer alike).
USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


@dataclass(frozen=True)
class DockerConfig:
    """The DOCKER_CONFIG directory of the current test."""

    dir: Path

    @property
    def path(self) -> Path:
        return self.dir / "config.json"

    def read(self) -> dict[str, object]:
        if not self.path.exists():
            return {}
        data: dict[str, object] = json.loads(self.path.read_text())
        return data

    def write(self, config: dict[str, object]) -> None:
        self.path.write_text(json.dumps(config))

    def write_auth(self, host: str, user: str, password: str) -> None:
        """Add `{"auths": {host: {"auth": base64(user:password)}}}`, keeping other entries."""
        config = self.read()
        auths = config.setdefault("auths", {})
        assert isinstance(auths, dict)
        auths[host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        self.write(config)
