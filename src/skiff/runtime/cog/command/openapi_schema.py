"""``python -m cog.command.openapi_schema``: print the predictor's OpenAPI schema as JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback

from ..config import ConfigError, predictor_ref, trainer_ref
from ..introspect import IntrospectionError
from ..predictor import PredictorLoadError
from ..schema import openapi_schema
from ..static import StaticSchemaError, static_openapi_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cog.command.openapi_schema")
    parser.add_argument(
        "--static",
        action="store_true",
        help="read the predictor's source instead of importing it (no dependencies needed)",
    )
    args = parser.parse_args(argv)
    cwd = os.getcwd()
    try:
        if args.static:
            schema = static_openapi_schema(predictor_ref(cwd), cwd, trainer_ref(cwd))
        else:
            # The predictor's import-time prints must not corrupt the JSON on stdout.
            with contextlib.redirect_stdout(sys.stderr):
                schema = openapi_schema(predictor_ref(cwd), cwd, trainer_ref(cwd))
    except (ConfigError, PredictorLoadError, IntrospectionError, StaticSchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc()
        print(f"error: importing the predictor failed: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
