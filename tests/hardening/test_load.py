"""Load: 16 pushes of one model, under 16 tags, at the same time, to one registry."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hardutil import assert_complete, make_model, open_sessions

from skiff.push import PushResult, push
from support import RegistryServer

PUSHES = 16
REPO = "demo/load"


def test_sixteen_concurrent_pushes_of_one_model_all_succeed_and_share_their_blobs(
    tmp_path: Path, registry: RegistryServer
) -> None:
    model = make_model(tmp_path)
    before = set(registry.blobs())  # the base image
    tags = [f"t{i:02d}" for i in range(PUSHES)]
    with ThreadPoolExecutor(max_workers=PUSHES) as pool:
        results: list[PushResult] = list(
            pool.map(lambda tag: push(model, f"{registry.host}/{REPO}:{tag}"), tags)
        )
    digests = {str(result.digest) for result in results}
    assert len(digests) == 1  # one image, whichever push built or sent which layer
    digest = digests.pop()
    assert registry.tags(REPO) == dict.fromkeys(tags, digest)
    assert registry.manifests(REPO) == [digest]
    assert_complete(registry, REPO)
    # Deduplicated: the registry holds each blob once, and nothing but the image's blobs.
    manifest = json.loads(registry.blob_bytes(digest))
    image = {
        digest,
        manifest["config"]["digest"],
        *(layer["digest"] for layer in manifest["layers"]),
    }
    assert set(registry.blobs()) == before | image
    assert open_sessions(registry, REPO) == []  # every upload session was committed
