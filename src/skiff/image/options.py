"""What a build is asked to do. Kept apart from the builder, whose imports (cog.yaml's schema,
the step runner) a push should not pay for before its preflight has started."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skiff.image.oci import LINUX_AMD64, Platform

# The Cog SDK (``cog`` and its ``coglet``) an image gets when cog.yaml names none: the newest
# release the test suite has run images with. build.sdk_version and --sdk-version choose another.
DEFAULT_SDK_VERSION = "0.23.1"


@dataclass(frozen=True)
class BuildOptions:
    base_image: str | None = None  # default: python:X.Y-slim for cog.yaml's python_version
    platform: Platform = LINUX_AMD64
    refresh_base: bool = False
    tag: str | None = None  # a name for the image in the cache's index
    # --secret id=ID,src=FILE: files build steps may mount; their contents never enter the image
    secrets: Mapping[str, Path] = field(default_factory=dict, hash=False)
    # --sdk-version: Cog's runtime version, over cog.yaml's build.sdk_version and the default
    sdk_version: str | None = None
