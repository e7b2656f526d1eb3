"""The Cog-compatible runtime skiff installs in every image it builds.

The ``cog`` package beside this file uses only the standard library and only relative
imports: the image builder copies that directory to the image's Python path, where it is
imported as the top-level module ``cog``. ``local`` runs it from skiff (schema, predict).
"""

from .local import (
    predict_argv,
    read_openapi_schema,
    runtime_dir,
    runtime_env,
    schema_for_build,
    serve_argv,
)

__all__ = [
    "predict_argv",
    "read_openapi_schema",
    "runtime_dir",
    "runtime_env",
    "schema_for_build",
    "serve_argv",
]
