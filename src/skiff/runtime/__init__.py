"""The Cog-compatible runtime skiff installs in every image it builds.

The ``cog`` package beside this file uses only the standard library and only relative
imports: the image builder copies that directory to the image's Python path, where it is
imported as the top-level module ``cog``.
"""

from pathlib import Path

__all__ = ["runtime_dir"]


def runtime_dir() -> Path:
    """The directory that contains ``cog/``: put it on PYTHONPATH to ``import cog``."""
    return Path(__file__).resolve().parent
