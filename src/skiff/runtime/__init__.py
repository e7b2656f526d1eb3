"""Running models with Cog's own runtime (``cog`` + ``coglet`` from PyPI), and the schema.

``skiff predict`` and ``skiff serve`` run Cog's server in a cached uv environment for a model
folder (``venv``, ``srcdir``), or a built image under bubblewrap (``image``); ``process`` starts
and stops it whole. ``schema_for_build`` is the build-time schema generator (``buildschema``).
"""

from .buildschema import read_openapi_schema, runtime_dir, schema_for_build

__all__ = ["read_openapi_schema", "runtime_dir", "schema_for_build"]
