"""Reproducible gzip: the bytes depend on the input alone, and every gzip reader reads them all."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.image.reproducible_gzip import MEMBER_INPUT, GzipMembers


def text(size: int) -> bytes:
    """Compressible, non-repeating bytes (like source code or a vocabulary file)."""
    lines = (f"token_{i * 7919 % 100_003:06d} = {i % 97}\n".encode() for i in range(size // 10))
    return b"".join(lines)[:size]


def compressed(data: bytes, writes: list[int] | None = None, workers: int | None = None) -> bytes:
    out = io.BytesIO()
    with GzipMembers(out, workers=workers) as zipped:
        view, pos = memoryview(data), 0
        for size in writes or [len(data)]:
            zipped.write(bytes(view[pos : pos + size]))
            pos += size
        zipped.write(bytes(view[pos:]))
    return out.getvalue()


def members(data: bytes) -> int:
    """How many gzip members ``data`` holds (walking it with zlib, member by member)."""
    count = 0
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inflater.decompress(data)
        assert inflater.eof, "a member is cut short"
        data = inflater.unused_data
        count += 1
    return count


DATA = text(5 * MEMBER_INPUT + 12345)


def test_one_member_per_mib_of_input_and_every_reader_reads_them_all(tmp_path: Path) -> None:
    out = compressed(DATA)
    assert members(out) == 6
    assert len(out) < len(DATA) / 3
    assert gzip.decompress(out) == DATA
    # GNU gzip, as a shell pipeline in a build step would read a layer.
    path = tmp_path / "layer.gz"
    path.write_bytes(out)
    done = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == DATA


def test_known_digest() -> None:
    """A golden value: the same on every machine, whatever zlib the interpreter has.

    It changes only with libdeflate's version (pinned in pyproject.toml): when it does, every
    gzip layer's digest changes, and this test says so before a release does.
    """
    assert hashlib.sha256(compressed(DATA)).hexdigest() == GOLDEN


GOLDEN = "9fae42cd170b2b83917d81af96aff743c64420bd6962d506a2d3555d2b349609"


@pytest.fixture(scope="module")
def reference() -> bytes:
    return compressed(DATA, workers=1)


@settings(max_examples=15, deadline=None)
@given(writes=st.lists(st.integers(min_value=0, max_value=3 * MEMBER_INPUT // 2), max_size=8))
def test_bytes_do_not_depend_on_how_the_input_was_written(
    reference: bytes, writes: list[int]
) -> None:
    assert compressed(DATA, writes) == reference


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_bytes_do_not_depend_on_the_number_of_threads(reference: bytes, workers: int) -> None:
    assert compressed(DATA, workers=workers) == reference


@pytest.mark.parametrize("size", [0, 1, MEMBER_INPUT - 1, MEMBER_INPUT, MEMBER_INPUT + 1])
def test_sizes_at_member_edges(size: int) -> None:
    data = text(size)
    out = compressed(data)
    assert gzip.decompress(out) == data
    assert members(out) == max(1, -(-size // MEMBER_INPUT))


def test_an_error_in_the_block_writes_nothing_more_and_leaves_no_thread() -> None:
    out = io.BytesIO()
    before = threading.active_count()
    with pytest.raises(RuntimeError), GzipMembers(out, workers=2) as zipped:
        zipped.write(DATA)  # five full members, some still being compressed
        raise RuntimeError("the build failed")
    written = out.getvalue()
    assert members(written) < 6  # the partial last member was never written
    with pytest.raises(ValueError):
        zipped.write(b"more")
    assert threading.active_count() == before
