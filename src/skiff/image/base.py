"""Pulling the base image into the build cache, once.

The base is resolved through the registry client (any registry, any auth), for one platform, and
remembered in the cache's index under ``base/<reference>/<platform>``: a warm rebuild does not
touch the network. ``refresh=True`` asks the registry again (the tag may have moved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from skiff import reference as refs
from skiff.auth import dockerconfig
from skiff.auth.credentials import ANONYMOUS
from skiff.errors import BuildFailed, SkiffError
from skiff.image.layout import Layout
from skiff.image.oci import (
    DOCKER_LAYER_GZIP,
    INDEX_TYPES,
    OCI_LAYER_GZIP,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)
from skiff.registry.client import RegistryClient
from skiff.registry.errors import RegistryError
from skiff.registry.transport import TransportOptions

# Docker's media types name the same bytes as OCI's; the image skiff writes is OCI throughout.
_TO_OCI = {DOCKER_LAYER_GZIP: OCI_LAYER_GZIP}
_DOCKER_UNCOMPRESSED = "application/vnd.docker.image.rootfs.diff.tar"


@dataclass(frozen=True)
class BaseImage:
    reference: refs.Reference
    manifest: Manifest
    config: ImageConfig

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers


def default_base(python_version: str) -> str:
    return f"python:{python_version}-slim"


def _cache_name(ref: refs.Reference, platform: Platform) -> str:
    return f"base/{ref}/{platform}"


def pull_base(
    text: str,
    platform: Platform,
    layout: Layout,
    *,
    refresh: bool = False,
) -> BaseImage:
    """The base image for ``platform``, from the cache if it is complete there, else pulled."""
    try:
        ref = refs.parse(text)
    except refs.ReferenceError as exc:
        raise BuildFailed(
            f"invalid base image {text!r}: {exc.message}", "check --base-image / SKIFF_BASE_IMAGE"
        ) from None
    name = _cache_name(ref, platform)
    if not refresh:
        cached = layout.resolve(name)
        if cached is not None and layout.has(cached.digest):
            manifest = Manifest.from_bytes(layout.read_bytes(cached.digest))
            if all(layout.has(d.digest) for d in (manifest.config, *manifest.layers)):
                config = ImageConfig.from_bytes(layout.read_bytes(manifest.config.digest))
                return BaseImage(ref, manifest, config)
    try:
        return _pull(ref, platform, layout, name)
    except RegistryError as exc:
        raise BuildFailed(
            f"cannot pull the base image {ref}: {exc.message}",
            (f"{exc.hint}; or " if exc.hint else "")
            + "choose a base image you can reach with --base-image or SKIFF_BASE_IMAGE",
        ) from None


def _pull(
    ref: refs.Reference,
    platform: Platform,
    layout: Layout,
    name: str,
) -> BaseImage:
    try:
        credentials = dockerconfig.resolve(ref.repository.registry)
    except SkiffError:
        credentials = ANONYMOUS
    # No deadline on the whole pull (base layers may be large); every wait has its timeout,
    # and every answer is bounded by its descriptor's size.
    options = TransportOptions.from_env(deadline=None, phase="base image pull")
    with RegistryClient(ref.repository, credentials, actions=("pull",), options=options) as client:
        data, media_type = client.get_manifest(ref.identifier)
        if media_type in INDEX_TYPES or b'"manifests"' in data[:4096]:
            chosen = Index.from_bytes(data).select(platform)
            data, media_type = client.get_manifest(str(chosen.digest), size=chosen.size)
        manifest = Manifest.from_bytes(data)
        for descriptor in (manifest.config, *manifest.layers):
            if layout.has(descriptor.digest, descriptor.size):
                continue
            with client.get_blob(descriptor.digest, descriptor.size) as pieces:
                layout.ingest(pieces, expected=descriptor.digest)
    config = ImageConfig.from_bytes(layout.read_bytes(manifest.config.digest))
    if config.platform.architecture != platform.architecture:
        raise BuildFailed(
            f"the base image {ref} is for {config.platform}, not {platform}",
            "choose a base image for that platform, or another --platform",
        )
    oci = Manifest(
        config=replace(manifest.config, media_type="application/vnd.oci.image.config.v1+json"),
        layers=tuple(
            replace(
                d,
                media_type=_TO_OCI.get(d.media_type, d.media_type).replace(
                    _DOCKER_UNCOMPRESSED, "application/vnd.oci.image.layer.v1.tar"
                ),
            )
            for d in manifest.layers
        ),
    )
    descriptor = layout.write_json(oci.media_type, oci.to_bytes())
    layout.tag(name, descriptor)
    return BaseImage(ref, oci, config)
