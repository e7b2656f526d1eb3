"""The build cache under stress: a build killed mid-write, two pushes sharing one cache, and a
cached blob corrupted on disk (rebuilt in the same push)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hardutil import MB, SKIFF, assert_complete, make_model, skiff

from skiff.errors import BuildFailed, InvalidInput
from skiff.image.layout import Layout, claim_work_dir, release_work_dir
from skiff.push import PushOptions, QuietEvents, push
from support import RegistryServer, push_tiny_image
from support.faultproxy import FaultProxy


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


def backdate(path: Path, seconds: float = 3600) -> None:
    """As if nobody had written ``path`` for an hour: only a lock can keep it now."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


_HOLD_A_WORK_DIR = """
import sys, time
from pathlib import Path
from skiff.image.layout import claim_work_dir
work = claim_work_dir(Path(sys.argv[1]), "rootfs-")
(work / "root").mkdir()
(work / "root" / "etc").mkdir(mode=0o555)  # read-only, as unpacked images have
print(work, flush=True)
time.sleep(600)
"""


def test_leftovers_of_killed_builds_are_removed_at_start_and_live_work_is_kept(
    tmp_path: Path, registry: RegistryServer, hermetic_env: Path
) -> None:
    """A build killed mid-blob and a build step killed mid-run leave a partial blob and an
    unpacked root filesystem in the cache; the next skiff removes both as it starts, and keeps
    the temporary blob and the work folder another live process is using."""
    model = make_model(tmp_path, weights=300 * MB)
    with subprocess.Popen(
        [str(SKIFF), "build", "-C", str(model)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as build:
        try:
            deadline = time.monotonic() + 60
            while not any(size_of(t) > 20 * MB for t in blob_dir(hermetic_env).glob(".ingest-*")):
                assert build.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            build.kill()
    partial = list(blob_dir(hermetic_env).glob(".ingest-*"))
    assert partial
    rootfs = hermetic_env / "rootfs"
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_WORK_DIR, str(rootfs)], stdout=subprocess.PIPE, text=True
    ) as step:
        try:
            assert step.stdout is not None
            abandoned = Path(step.stdout.readline().strip())
        finally:
            step.kill()
    assert abandoned.is_dir()

    # Live work of another process (this one): a blob being written, an unpacked root.
    layout = Layout.open(hermetic_env / "oci")
    with layout.writer() as writer:
        writer.write(b"half of a layer")
        writer.flush()
        live = claim_work_dir(rootfs, "rootfs-")
        (live / "root").mkdir()
        for path in [*partial, abandoned, live, *blob_dir(hermetic_env).glob(".ingest-*")]:
            backdate(path)

        done = skiff("build", "-C", str(make_model(tmp_path, name="other")))
        assert done.returncode == 0, done.stderr

        assert not any(path.exists() for path in partial), "the partial blob is still there"
        assert not abandoned.exists(), "the killed step's root filesystem is still there"
        assert (live / "root").is_dir(), "a live build's root filesystem was removed"
        writer.write(b" and the rest")
        digest = writer.commit()  # its temporary was kept: it becomes a blob
    assert layout.read_bytes(digest) == b"half of a layer and the rest"
    release_work_dir(live, shutil.rmtree)
    assert not live.exists()
    assert_blobs_intact(hermetic_env)


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


def corrupt(path: Path, how: str) -> None:
    """Bytes flipped in the middle, the size kept; or the second half cut off."""
    path.chmod(0o644)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        if how == "truncated":
            handle.truncate(size // 2)
        else:
            handle.seek(size // 2)
            handle.write(b"\x00corrupted\x00")


@pytest.mark.parametrize(
    ("case", "chunk_size"),
    [("weights", None), ("weights", 1 * MB), ("base", None)],
    ids=["whole", "chunked", "truncated-base"],
)
def test_a_corrupted_cached_blob_is_rebuilt_and_the_push_finishes_in_the_same_run(
    tmp_path: Path,
    registry: RegistryServer,
    hermetic_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    chunk_size: int | None,
) -> None:
    """The bytes of a cached blob no longer match its digest (a disk fault, an edit through a
    hard link): the push never sends them for good, never retries them as if the network had
    failed, rebuilds the blob (the base's is pulled again) and completes."""
    if case == "base":
        # A base layer large enough to go up in a streamed PATCH, read as it is sent.
        push_tiny_image(registry, "base/large", "1", files={"big.bin": os.urandom(12 * MB)})
        monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{registry.host}/base/large:1")
    model = make_model(tmp_path, weights=3 * MB)
    built = skiff("build", "-C", str(model))
    assert built.returncode == 0, built.stderr
    # The largest blob: the weights layer, or the base's layer.
    victim = max(blob_dir(hermetic_env).iterdir(), key=lambda path: path.stat().st_size)
    bad_digest = f"sha256:{victim.name}"
    corrupt(victim, "truncated" if case == "base" else "flipped")
    repo = "demo/corrupt"

    # Through the fault proxy, another host than the base's registry: nothing is mounted.
    with FaultProxy(registry.host) as proxy:
        started = time.monotonic()
        result = push(model, f"{proxy.host}/{repo}:v1", PushOptions(chunk_size=chunk_size))
        took = time.monotonic() - started
        heads = proxy.requests("HEAD", f"/blobs/{bad_digest}")
        resumes = proxy.requests("GET", "/blobs/uploads/")
    assert registry.tags(repo) == {"v1": str(result.digest)}
    assert_complete(registry, repo)
    assert bad_digest in registry.layers(repo)
    assert hashlib.sha256(registry.blob_bytes(bad_digest)).hexdigest() == victim.name
    assert any(str(layer.digest) == bad_digest for layer in result.layers)
    assert any(bad_digest in warning and "rebuilt" in warning for warning in result.warnings)
    # Asked about once before the rebuild and once after; an upload retried would ask again
    # after each backoff, and a chunked one would ask where its session stands.
    assert len(heads) <= 2, [h.target for h in heads]
    assert resumes == [], [r.target for r in resumes]
    assert took < 10, f"the push took {took:.1f} s"
    assert_blobs_intact(hermetic_env)


class CorruptingEvents(QuietEvents):
    """Corrupts ``victim`` in the cache each time its upload starts: a disk that keeps giving
    back other bytes than were written."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim
        self.times = 0

    def blob_started(self, key: object, size: int | None, role: str) -> None:
        if str(key) == f"sha256:{self.victim.name}" and self.victim.exists():
            self.times += 1
            corrupt(self.victim, "flipped")


def test_a_blob_still_corrupt_after_its_rebuild_fails_the_build_instead_of_looping(
    tmp_path: Path, registry: RegistryServer, hermetic_env: Path
) -> None:
    model = make_model(tmp_path, weights=3 * MB)
    built = skiff("build", "-C", str(model))
    assert built.returncode == 0, built.stderr
    victim = max(blob_dir(hermetic_env).iterdir(), key=lambda path: path.stat().st_size)
    events = CorruptingEvents(victim)
    with pytest.raises(BuildFailed) as failed:
        push(model, f"{registry.host}/demo/bad-disk:v1", events=events)
    assert events.times == 2  # the first build, and one rebuild: no more
    assert "even after a rebuild" in failed.value.message
    assert f"sha256:{victim.name}" not in registry.blobs()
    assert registry.manifests("demo/bad-disk") == []


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
