"""Load: 16 pushes of one model, under 16 tags, at the same time, to one registry.

Separate `skiff push` processes sharing one cache, as 16 users or CI jobs would run them. (In
threads of one process, CPython 3.11.7 fails `ast.parse` now and then with "AST constructor
recursion depth mismatch", a CPython bug that preflight's check of predict.py runs into.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hardutil import SKIFF, assert_complete, make_model, open_sessions

from support import RegistryServer

PUSHES = 16
REPO = "demo/load"


def test_sixteen_concurrent_pushes_of_one_model_all_succeed_and_share_their_blobs(
    tmp_path: Path, registry: RegistryServer
) -> None:
    model = make_model(tmp_path)
    before = set(registry.blobs())  # the base image
    tags = [f"t{i:02d}" for i in range(PUSHES)]
    processes = [
        subprocess.Popen(
            [str(SKIFF), "push", f"{registry.host}/{REPO}:{tag}", "-C", str(model), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for tag in tags
    ]
    try:
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    digests = {summary["digest"] for summary in summaries}
    assert len(digests) == 1  # one image, whichever push built or sent which layer
    digest = digests.pop()
    assert registry.tags(REPO) == dict.fromkeys(tags, digest)
    assert registry.manifests(REPO) == [digest]
    assert_complete(registry, REPO)
    # Deduplicated: the registry holds each blob once, and nothing but the image's blobs.
    manifest = json.loads(registry.blob_bytes(digest))
    layers = {layer["digest"] for layer in manifest["layers"]}
    assert set(registry.blobs()) == before | layers | {digest, manifest["config"]["digest"]}
    assert open_sessions(registry, REPO) == []  # every upload session was committed
