"""Zstandard whose bytes depend on the input alone: a zstd layer has one digest on every machine.

zstd decompresses several times faster than gzip and, at level 3, compresses faster and smaller
than libdeflate's gzip level 6 (bench/compress.py). Its bytes are fixed by three things, all
pinned here: the library (libzstd bundled by the ``zstandard`` package, pinned in
pyproject.toml), the parameters (``LEVEL``, no checksum, the content size in each frame header,
no dictionary) and the input each frame is given. zstd's own multi-threaded mode writes other
bytes for another thread count, so it is never used: the input is cut into frames of
``FRAME_INPUT`` bytes at fixed offsets, each compressed alone (single-threaded; libzstd releases
the interpreter lock), side by side on the CPU's cores. A zstd stream is a series of frames (RFC
8878 §3.1): containerd's, Go's and libzstd's readers read them all.

Layers in this format have the media type ``application/vnd.oci.image.layer.v1.tar+zstd``.
"""

from __future__ import annotations

import threading

import zstandard

from skiff.image.reproducible_gzip import ChunkedWriter

FRAME_INPUT = 4 << 20  # uncompressed bytes per frame: past zstd's 2 MiB window at this level
LEVEL = 3  # zstd's default: faster than libdeflate's gzip, and smaller
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # One per thread: a ZstdCompressor must not be used by two threads at once.
    found: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if found is None:
        found = zstandard.ZstdCompressor(
            level=LEVEL,
            write_checksum=False,
            write_content_size=True,
            write_dict_id=False,
            threads=0,
        )
        _local.compressor = found
    return found


def compress_frame(data: bytes) -> bytes:
    """One zstd frame for ``data``, with the fixed parameters above."""
    return _compressor().compress(data)


class ZstdFrames(ChunkedWriter):
    """A write-only file object: what is written goes to ``target`` as reproducible zstd."""

    chunk = FRAME_INPUT

    def compress(self, data: bytes) -> bytes:
        return compress_frame(data)


__all__ = ["FRAME_INPUT", "LEVEL", "ZstdFrames", "compress_frame"]
