"""Reproducible zstd layers: the bytes depend on the input alone (not on threads or writes),
every reader reads all the frames, and skiff unpacks a zstd layer it wrote."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest
import zstandard

from skiff.image.layers import Entry, build_layer
from skiff.image.layout import Layout
from skiff.image.oci import OCI_LAYER_ZSTD
from skiff.image.reproducible_zstd import FRAME_INPUT, ZstdFrames
from skiff.image.rootfs import apply_layer


def text(size: int) -> bytes:
    lines = (f"token_{i * 7919 % 100_003:06d} = {i % 97}\n".encode() for i in range(size // 10))
    return b"".join(lines)[:size]


def compressed(data: bytes, writes: list[int] | None = None, workers: int | None = None) -> bytes:
    out = io.BytesIO()
    with ZstdFrames(out, workers=workers) as frames:
        view, pos = memoryview(data), 0
        for size in writes or []:
            frames.write(bytes(view[pos : pos + size]))
            pos += size
        frames.write(bytes(view[pos:]))
    return out.getvalue()


def frames(data: bytes) -> int:
    """How many zstd frames ``data`` holds, walked frame by frame."""
    count = 0
    while data:
        obj = zstandard.ZstdDecompressor().decompressobj()
        obj.decompress(data)
        assert obj.eof, "a frame is cut short"
        data = obj.unused_data
        count += 1
    return count


DATA = text(3 * FRAME_INPUT + 12345)
# Change only on purpose (a new zstandard pin, LEVEL or FRAME_INPUT): every zstd layer digest
# changes with it.
GOLDEN = "d7fd2fbb68698bc083f79d9dbbd73fde9ed58eb2485de42d2c848b44670537fe"


def test_known_digest_and_one_frame_per_chunk_that_zstd_reads_whole(tmp_path: Path) -> None:
    data = compressed(DATA)
    assert hashlib.sha256(data).hexdigest() == GOLDEN
    assert frames(data) == 4
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    assert reader.read() == DATA
    (tmp_path / "x.zst").write_bytes(data)
    # The zstd command line tool (an independent reader) reads every frame too.
    out = subprocess.run(["zstd", "-dc", str(tmp_path / "x.zst")], capture_output=True, check=True)
    assert out.stdout == DATA
    assert len(data) < len(DATA) / 3


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_bytes_do_not_depend_on_threads_or_how_the_input_was_written(workers: int) -> None:
    assert compressed(DATA, workers=workers) == compressed(DATA)
    assert compressed(DATA, writes=[1, FRAME_INPUT - 2, 7, 100_000]) == compressed(DATA)


def test_empty_input_is_one_valid_frame() -> None:
    data = compressed(b"")
    assert zstandard.ZstdDecompressor().decompress(data) == b""


def test_a_zstd_layer_is_reproducible_and_unpacks_in_skiff(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "oci")
    payload = text(FRAME_INPUT + 999)
    entries = [
        Entry.file("/opt/data/vocab.txt", payload, 0o644),
        Entry.symlink("/opt/data/link", "vocab.txt"),
        Entry.hard_link("/opt/data/words.txt", "/opt/data/vocab.txt", 0o644),
    ]
    layer = build_layer(entries, layout, "zstd")
    assert layer.descriptor.media_type == OCI_LAYER_ZSTD
    assert OCI_LAYER_ZSTD == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert build_layer(entries, layout, "zstd") == layer
    raw = (
        zstandard.ZstdDecompressor()
        .stream_reader(
            io.BytesIO(layout.read_bytes(layer.descriptor.digest)), read_across_frames=True
        )
        .read()
    )
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == str(layer.diff_id)

    root = tmp_path / "root"
    root.mkdir()
    with layout.open_blob(layer.descriptor.digest) as blob:
        apply_layer(blob, root)
    assert (root / "opt/data/words.txt").read_bytes() == payload
