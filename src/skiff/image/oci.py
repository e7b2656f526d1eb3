"""OCI image values: media types, descriptors, manifests, indexes and image configs.

Everything skiff writes is serialised canonically (sorted keys, no whitespace) so that the same
values always give the same bytes and therefore the same digest. Parsing accepts both the OCI
media types and Docker's v2 schema2 ones, because base images on Docker Hub use the latter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from skiff.digest import Digest
from skiff.errors import BuildFailed, InvalidInput

# OCI media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Docker v2 schema2 media types (what most base images on Docker Hub are)
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
GZIP_LAYER_TYPES = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP})

# Annotation naming an image inside an OCI layout's index.json.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# The creation time written into configs: a constant keeps the config digest reproducible.
EPOCH = "1970-01-01T00:00:00Z"


def canonical_json(value: Any) -> bytes:
    """The one byte form skiff gives a JSON document: sorted keys, no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BuildFailed(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True)
class Platform:
    """An image platform such as ``linux/amd64`` or ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidInput(
                f"invalid platform {text!r}", "write it as OS/ARCH, e.g. linux/amd64 or linux/arm64"
            )
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        return cls(parts[0], arch, variant)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Platform:
        return cls(str(value["os"]), str(value["architecture"]), value.get("variant") or None)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` can serve this platform (arm64 images often omit variant v8)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or other.variant is None or self.variant == other.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


LINUX_AMD64 = Platform("linux", "amd64")


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: media type, digest and size (and, in an index, its platform)."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] | None = field(default=None, hash=False)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Descriptor:
        try:
            platform = value.get("platform")
            return cls(
                media_type=str(value["mediaType"]),
                digest=Digest.parse(str(value["digest"])),
                size=int(value["size"]),
                annotations=dict(value["annotations"]) if value.get("annotations") else None,
                platform=Platform.from_json(platform) if platform else None,
            )
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise BuildFailed(f"malformed descriptor {dict(value)!r}: {exc}") from None

    def with_annotations(self, **annotations: str) -> Descriptor:
        return replace(self, annotations={**(self.annotations or {}), **annotations})


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config blob and the ordered layers (base first)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    annotations: Mapping[str, str] | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> Digest:
        return Digest.of(self.to_bytes())

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        data = self.to_bytes()
        return Descriptor(self.media_type, Digest.of(data), len(data), platform=platform)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        value = _load(data, "image manifest")
        media_type = value.get("mediaType", OCI_MANIFEST)
        if media_type not in MANIFEST_TYPES or value.get("schemaVersion") != 2:
            raise BuildFailed(f"unsupported manifest (mediaType {media_type!r})")
        try:
            return cls(
                config=Descriptor.from_json(value["config"]),
                layers=tuple(Descriptor.from_json(d) for d in value.get("layers") or ()),
                media_type=media_type,
                annotations=value.get("annotations") or None,
            )
        except KeyError as exc:
            raise BuildFailed(f"image manifest lacks {exc}") from None


@dataclass(frozen=True)
class Index:
    """An image index (or Docker manifest list): one manifest per platform."""

    manifests: tuple[Descriptor, ...]
    media_type: str = OCI_INDEX
    annotations: Mapping[str, str] | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_json() for m in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        value = _load(data, "image index")
        media_type = value.get("mediaType", OCI_INDEX)
        if media_type not in INDEX_TYPES:
            raise BuildFailed(f"unsupported image index (mediaType {media_type!r})")
        return cls(
            manifests=tuple(Descriptor.from_json(d) for d in value.get("manifests") or ()),
            media_type=media_type,
            annotations=value.get("annotations") or None,
        )

    def select(self, platform: Platform) -> Descriptor:
        """The manifest for ``platform``; a BuildFailed listing the platforms on offer if none."""
        for manifest in self.manifests:
            if manifest.platform is not None and platform.matches(manifest.platform):
                return manifest
        offered = ", ".join(str(m.platform) for m in self.manifests if m.platform) or "none"
        raise BuildFailed(
            f"the base image has no {platform} variant (it offers: {offered})",
            "choose another --platform or a base image built for it",
        )


@dataclass(frozen=True)
class History:
    """One history entry of an image config (informational; shown by ``docker history``)."""

    created_by: str
    empty_layer: bool = False
    comment: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": EPOCH, "created_by": self.created_by}
        if self.empty_layer:
            out["empty_layer"] = True
        if self.comment:
            out["comment"] = self.comment
        return out


@dataclass(frozen=True)
class ImageConfig:
    """The image config blob: platform, run settings, and the diff_ids of the layers.

    ``extra`` keeps fields of a base image's config skiff does not model (User, ExposedPorts, ...)
    and ``history`` keeps the base's history entries verbatim, so extending a base loses nothing.
    """

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str | None = None
    labels: Mapping[str, str] | None = field(default=None, hash=False)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    extra: Mapping[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def for_platform(cls, platform: Platform) -> ImageConfig:
        """An empty config, for images built from scratch."""
        return cls(os=platform.os, architecture=platform.architecture, variant=platform.variant)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    @property
    def env_map(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.env)
        return {key: value for key, _, value in pairs}

    def with_env(self, env: Mapping[str, str]) -> ImageConfig:
        """Sets variables, replacing existing ones in place and appending new ones in order."""
        merged = self.env_map
        merged.update(env)
        return replace(self, env=tuple(f"{k}={v}" for k, v in merged.items()))

    def with_labels(self, labels: Mapping[str, str]) -> ImageConfig:
        return replace(self, labels={**(self.labels or {}), **labels})

    def with_exposed_port(self, port: str) -> ImageConfig:
        """Declares a port such as ``5000/tcp`` (Dockerfile ``EXPOSE``), keeping the base's."""
        extra = dict(self.extra or {})
        run = dict(extra.get("config") or {})
        run["ExposedPorts"] = {**(run.get("ExposedPorts") or {}), port: {}}
        extra["config"] = run
        return replace(self, extra=extra)

    def with_run(
        self,
        *,
        cmd: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        working_dir: str | None = None,
    ) -> ImageConfig:
        """Sets how the container starts. A new entrypoint clears the base's cmd, as Docker does."""
        new = self
        if entrypoint is not None:
            new = replace(new, entrypoint=tuple(entrypoint), cmd=None)
        if cmd is not None:
            new = replace(new, cmd=tuple(cmd))
        if working_dir is not None:
            new = replace(new, working_dir=working_dir)
        return new

    def with_layers(self, diff_ids: Iterable[Digest], created_by: str) -> ImageConfig:
        """Appends layers (uncompressed digests, bottom first) with one history entry each."""
        added = tuple(diff_ids)
        entry = History(created_by).to_json()
        return replace(
            self,
            diff_ids=self.diff_ids + added,
            history=tuple(self.history) + tuple(entry for _ in added),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra or {})
        run: dict[str, Any] = dict(out.pop("config", None) or {})
        for key, value in (
            ("Env", list(self.env) or None),
            ("Cmd", list(self.cmd) if self.cmd is not None else None),
            ("Entrypoint", list(self.entrypoint) if self.entrypoint is not None else None),
            ("WorkingDir", self.working_dir or None),
            ("Labels", dict(self.labels) if self.labels else None),
        ):
            if value is None:
                run.pop(key, None)
            else:
                run[key] = value
        out.update(
            {
                "created": EPOCH,
                "os": self.os,
                "architecture": self.architecture,
                "config": run,
                "rootfs": {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]},
                "history": [dict(h) for h in self.history],
            }
        )
        if self.variant:
            out["variant"] = self.variant
        else:
            out.pop("variant", None)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> Digest:
        return Digest.of(self.to_bytes())

    def descriptor(self) -> Descriptor:
        data = self.to_bytes()
        return Descriptor(OCI_CONFIG, Digest.of(data), len(data))

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        """Parses a base image's config (OCI or Docker); unknown fields are kept in ``extra``."""
        value = _load(data, "image config")
        extra = dict(value)
        run: dict[str, Any] = dict(extra.get("config") or {})
        rootfs = extra.pop("rootfs", None) or {}
        # Docker-only bookkeeping that describes the base's build, not this image.
        for key in ("container", "container_config", "docker_version", "id", "parent", "created"):
            extra.pop(key, None)
        try:
            config = cls(
                os=str(extra.pop("os", "linux")),
                architecture=str(extra.pop("architecture", "amd64")),
                variant=extra.pop("variant", None) or None,
                env=tuple(run.get("Env") or ()),
                cmd=tuple(run["Cmd"]) if run.get("Cmd") is not None else None,
                entrypoint=tuple(run["Entrypoint"]) if run.get("Entrypoint") is not None else None,
                working_dir=run.get("WorkingDir") or None,
                labels=dict(run["Labels"]) if run.get("Labels") else None,
                diff_ids=tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or ()),
                history=tuple(extra.pop("history", None) or ()),
                extra=extra,
            )
        except (TypeError, ValueError, InvalidInput) as exc:
            raise BuildFailed(f"malformed image config: {exc}") from None
        return config
