"""Content digests as values (``sha256:<64 hex>``), never bare strings."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from skiff.errors import InvalidInput, SkiffError

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, order=True)
class Digest:
    """A sha256 content digest; other algorithms are refused (every registry here uses sha256)."""

    hex: str

    @property
    def algorithm(self) -> str:
        return "sha256"

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _SHA256.match(text):
            raise InvalidInput(
                f"invalid digest {text!r}",
                "a digest is 'sha256:' followed by 64 lowercase hexadecimal characters",
            )
        return cls(text.split(":", 1)[1])

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


class CorruptBlob(SkiffError):
    """Bytes in the build cache no longer match their digest (a disk fault, an edit through a
    hard link). A fact about the cache, not about a registry: the blob is rebuilt, never sent
    for good, and never retried as if the network had failed."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(
            f"cached blob {digest} does not match its digest (the build cache is corrupted)",
            "it was removed from the cache: run the command again to rebuild it",
        )
        self.digest = digest
