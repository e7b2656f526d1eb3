"""Image references (``HOST/PATH:TAG@DIGEST``): parsing, normalisation and fix suggestions.

STUB: interface fixed, implementation in progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.digest import Digest
from skiff.errors import InvalidInput

DOCKER_HUB = "docker.io"


class ReferenceError(InvalidInput):
    """A reference that does not parse; ``suggestion`` is the corrected reference when one is clear."""

    def __init__(self, message: str, hint: str | None = None, suggestion: str | None = None) -> None:
        super().__init__(message, hint)
        self.suggestion = suggestion


@dataclass(frozen=True)
class Repository:
    """A repository in a registry: where blobs and manifests live, and the unit of permission."""

    registry: str  # normalised host[:port]; "docker.io" for Docker Hub
    path: str  # e.g. "library/ubuntu"

    @property
    def api_host(self) -> str:
        """The host[:port] that serves the /v2/ API (Docker Hub's differs from its name)."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    def scope(self, *actions: str) -> str:
        """A token scope such as ``repository:alice/model:push,pull``."""
        return f"repository:{self.path}:{','.join(actions)}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class Reference:
    repository: Repository
    tag: str | None = None
    digest: Digest | None = None

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest if any, else the tag, else "latest"."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.repository, tag, None)

    def __str__(self) -> str:
        text = str(self.repository)
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    raise NotImplementedError
