"""The build cache under stress: a build killed mid-write, two pushes sharing one cache, and a
cached blob corrupted on disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hardutil import MB, SKIFF, assert_complete, make_model, skiff

from skiff.errors import InvalidInput, UploadFailed
from skiff.image.layout import Layout
from skiff.push import PushOptions, push
from support import RegistryServer


def blob_dir(cache: Path) -> Path:
    return cache / "oci" / "blobs" / "sha256"


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # renamed or removed meanwhile
        return 0


def assert_blobs_intact(cache: Path) -> int:
    """Every file under a digest name holds exactly the bytes of that digest."""
    names = [path for path in blob_dir(cache).iterdir() if not path.name.startswith(".")]
    for path in names:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while data := handle.read(MB):
                digest.update(data)
        assert digest.hexdigest() == path.name, f"{path.name} holds other bytes"
    return len(names)


def test_a_build_killed_while_writing_a_blob_leaves_no_partial_blob(
    tmp_path: Path, registry: RegistryServer, hermetic_env: Path
) -> None:
    model = make_model(tmp_path, weights=300 * MB)
    command = [str(SKIFF), "build", "-C", str(model)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    ) as process:
        try:
            # Killed once the weights layer is being written: its temporary file has grown.
            deadline = time.monotonic() + 60
            while True:
                temporaries = list(blob_dir(hermetic_env).glob(".ingest-*"))
                if any(size_of(t) > 20 * MB for t in temporaries):
                    break
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the weights were never written"
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert_blobs_intact(hermetic_env)
    # No blob under a digest name is as large as the weights: that one was never finished.
    assert all(
        path.stat().st_size < 300 * MB
        for path in blob_dir(hermetic_env).iterdir()
        if not path.name.startswith(".")
    )

    done = skiff("build", "-C", str(model))
    assert done.returncode == 0, done.stderr
    assert assert_blobs_intact(hermetic_env) >= 4
    assert any(path.stat().st_size > 300 * MB for path in blob_dir(hermetic_env).iterdir())


def test_two_pushes_of_one_model_sharing_a_cache_both_succeed(
    tmp_path: Path, registry: RegistryServer, hermetic_env: Path
) -> None:
    model = make_model(tmp_path, weights=8 * MB)
    ref = f"{registry.host}/demo/shared:v1"
    command = [str(SKIFF), "push", ref, "-C", str(model), "--json"]
    processes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=180) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    digests = {json.loads(stdout)["digest"] for stdout, _ in outputs}
    assert len(digests) == 1  # the same image, whoever built which layer
    assert registry.tags("demo/shared") == {"v1": digests.pop()}
    assert_complete(registry, "demo/shared")
    assert_blobs_intact(hermetic_env)
    assert not list(blob_dir(hermetic_env).glob(".ingest-*"))


@pytest.mark.parametrize("chunk_size", [None, 1 * MB], ids=["whole", "chunked"])
def test_a_corrupted_cached_blob_is_never_pushed_and_the_next_push_rebuilds_it(
    tmp_path: Path, registry: RegistryServer, hermetic_env: Path, chunk_size: int | None
) -> None:
    model = make_model(tmp_path)
    built = skiff("build", "-C", str(model))
    assert built.returncode == 0, built.stderr
    # The weights layer is the largest blob; flip bytes in its middle, keeping its size.
    weights = max(blob_dir(hermetic_env).iterdir(), key=lambda path: path.stat().st_size)
    bad_digest = f"sha256:{weights.name}"
    weights.chmod(0o644)
    with weights.open("r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        handle.write(b"\x00corrupted\x00")
    repo = "demo/corrupt"
    options = PushOptions(chunk_size=chunk_size)

    with pytest.raises(UploadFailed) as failed:
        push(model, f"{registry.host}/{repo}:v1", options)
    assert "does not match its digest" in failed.value.message
    assert failed.value.hint and "run the push again" in failed.value.hint
    assert bad_digest not in registry.blobs()
    assert registry.manifests(repo) == []
    assert not weights.exists()  # removed from the cache

    result = push(model, f"{registry.host}/{repo}:v1", options)
    assert registry.tags(repo) == {"v1": str(result.digest)}
    assert_complete(registry, repo)
    assert bad_digest in registry.layers(repo)
    assert hashlib.sha256(registry.blob_bytes(bad_digest)).hexdigest() == weights.name
    assert_blobs_intact(hermetic_env)


def test_a_cache_being_created_by_another_skiff_is_opened_and_a_foreign_folder_refused(
    tmp_path: Path,
) -> None:
    # What a concurrent `Layout.open` leaves for a moment: the blob folder, a temporary marker.
    root = tmp_path / "oci"
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / ".oci-layout.x1y2.tmp").write_bytes(b"")
    assert Layout.open(root).blob_dir.is_dir()
    foreign = tmp_path / "photos"
    (foreign / "blobs").mkdir(parents=True)
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(InvalidInput):
        Layout.open(foreign)
