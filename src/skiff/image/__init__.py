"""Image building primitives: OCI values, the layout cache, reproducible layers, sources, deps.

Nothing here talks to a registry: base-image blobs are handed in by the caller.
"""

from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import Layout, cache_dir, default_layout
from skiff.image.oci import Descriptor, ImageConfig, Index, Manifest, Platform
from skiff.image.pydeps import SITE_PACKAGES, python_deps_layer
from skiff.image.sourcetree import SourcePlan, plan_source_layers

__all__ = [
    "SITE_PACKAGES",
    "Descriptor",
    "Entry",
    "ImageConfig",
    "Index",
    "Layer",
    "Layout",
    "Manifest",
    "Platform",
    "SourcePlan",
    "StatCache",
    "build_layer",
    "cache_dir",
    "default_layout",
    "plan_source_layers",
    "python_deps_layer",
]
