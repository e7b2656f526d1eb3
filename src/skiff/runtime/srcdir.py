"""A ``/src`` for Cog's server that leaves the user's model folder as it is.

coglet reads the predictor's schema from ``.cog/openapi_schema.json`` relative to its working
directory, as in an image (``/src``). Writing it into the user's folder would leave a file
there that nobody asked for (and fail on a read-only folder), so the server runs in a folder
of the cache whose entries are links to the model folder's, plus that ``.cog`` of its own. Each
run has its own, removed when the run ends: two runs of one folder never share one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from skiff.errors import BuildFailed

SCHEMA_PATH = ".cog/openapi_schema.json"
_STALE_AFTER_S = 24 * 3600


def make_srcdir(folder: Path, schema: dict[str, Any] | None, cache: Path) -> Path:
    """A new working folder mirroring ``folder`` by links, with Cog's schema file in it (none
    if ``schema`` is None: coglet then validates nothing)."""
    parent = cache / "run" / "src"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent)
        work = Path(tempfile.mkdtemp(prefix="src-", dir=parent))
        for entry in sorted(folder.resolve().iterdir()):
            if entry.name != ".cog":
                (work / entry.name).symlink_to(entry)
        (work / ".cog").mkdir()
        if schema is not None:
            (work / SCHEMA_PATH).write_text(json.dumps(schema), encoding="utf-8")
    except OSError as exc:
        raise BuildFailed(
            f"cannot prepare the model's working folder in the cache {parent}: {exc}",
            "check the cache folder's permissions, or set SKIFF_CACHE_DIR",
        ) from exc
    return work


def remove_srcdir(work: Path) -> None:
    # The entries are links: removing them never touches the model folder.
    shutil.rmtree(work, ignore_errors=True)


def _remove_stale(parent: Path) -> None:
    """Working folders of runs that were killed outright (SIGKILL) are removed a day later."""
    now = time.time()
    for entry in parent.iterdir():
        try:
            if now - entry.lstat().st_mtime > _STALE_AFTER_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue
