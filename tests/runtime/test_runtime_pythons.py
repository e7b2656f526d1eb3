"""The runtime on every Python an image may carry (3.9+), where this machine has them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import Any

import pytest

from conftest import CogServer


def find_python(minor: int) -> str | None:
    candidates = [shutil.which(f"python3.{minor}")]
    candidates += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3"))
    )
    for candidate in filter(None, candidates):
        try:
            subprocess.run([candidate, "-c", "pass"], check=True, capture_output=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue  # e.g. a pyenv shim for a version that is not active
        return candidate
    return None


@pytest.mark.parametrize("minor", [9, 10, 11, 12, 13])
def test_server_runs_on_python(minor: int, start_server: Any) -> None:
    python = find_python(minor)
    if python is None:
        pytest.skip(f"no Python 3.{minor} on this machine")
    server: CogServer = start_server("echo", python=python)
    r = server.client.post("/predictions", json={"input": {"text": "a b", "token": "t"}})
    assert r.status_code == 200, server.output()
    assert r.json()["output"] == ["a", "b"]
    assert r.json()["logs"] == "echoing 'a b'\ntoken is **********\n"
    assert server.client.post("/predictions", json={"input": {}}).status_code == 422
    schema = server.client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["Input"]["required"] == ["text"]
