#!/usr/bin/env python3
"""How fast skiff writes a compressed layer, against GNU gzip and Python's zlib.

    .venv/bin/python bench/compress.py                       # a tar of the venv's site-packages
    .venv/bin/python bench/compress.py --source DIR --rounds 7 --out bench/results/compress

A dependency layer (site-packages) is the large compressed layer of a real model. The tar of
``--source`` is made once (uncompressed, in a temporary file); each round then compresses it
with every contestant, in an order that rotates from round to round:

- ``skiff``: ``reproducible_gzip.GzipMembers`` (libdeflate, 1 MiB members, all cores);
- ``skiff, one thread``: the same with one worker (the same bytes, checked);
- ``python zlib``: ``gzip.GzipFile`` at level 6, what skiff wrote its layers with before;
- ``gzip -6``: GNU gzip, as ``tar | gzip`` would;
- ``pigz -6``: when installed (parallel gzip, not reproducible across zlib builds).

Times are medians of wall-clock seconds over the rounds; nothing here touches the network.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from skiff.image.reproducible_gzip import GzipMembers  # noqa: E402

READ = 1 << 20


class _Counter(io.RawIOBase):
    """A sink that counts and hashes what it is given (the compressed layer is not kept)."""

    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray) -> int:  # type: ignore[override]
        self.size += len(data)
        self.hash.update(data)
        return len(data)


def _feed(tar: Path, sink: Callable[[bytes], object]) -> None:
    with tar.open("rb") as f:
        while chunk := f.read(READ):
            sink(chunk)


def skiff(tar: Path, workers: int | None) -> tuple[int, str]:
    out = _Counter()
    with GzipMembers(out, workers=workers) as zipped:
        _feed(tar, zipped.write)
    return out.size, out.hash.hexdigest()


def python_zlib(tar: Path) -> tuple[int, str]:
    out = _Counter()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=out, mtime=0) as zipped:
        _feed(tar, zipped.write)
    return out.size, out.hash.hexdigest()


def command(argv: list[str], tar: Path) -> tuple[int, str]:
    with tar.open("rb") as source:
        done = subprocess.run(argv, stdin=source, capture_output=True, check=True, timeout=600)
    return len(done.stdout), hashlib.sha256(done.stdout).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_source = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    parser.add_argument("--source", type=Path, default=default_source / "site-packages")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write PREFIX.md with the table")
    args = parser.parse_args()

    contestants: dict[str, Callable[[Path], tuple[int, str]]] = {
        "skiff (reproducible_gzip, all cores)": lambda t: skiff(t, None),
        "skiff, one thread": lambda t: skiff(t, 1),
        "python zlib, level 6 (skiff before)": python_zlib,
        "gzip -6 -n (GNU gzip)": lambda t: command(["gzip", "-6", "-n", "-c"], t),
    }
    if shutil.which("pigz"):
        contestants["pigz -6 -n"] = lambda t: command(["pigz", "-6", "-n", "-c"], t)

    with tempfile.TemporaryDirectory(prefix="skiff-bench-compress-") as work:
        tar = Path(work) / "layer.tar"
        with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
            t.add(args.source, arcname="site-packages")
        size = tar.stat().st_size
        times: dict[str, list[float]] = {name: [] for name in contestants}
        outputs: dict[str, set[tuple[int, str]]] = {name: set() for name in contestants}
        names = list(contestants)
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                result = contestants[name](tar)
                times[name].append(time.perf_counter() - start)
                outputs[name].add(result)

    skiff_bytes = outputs["skiff (reproducible_gzip, all cores)"]
    assert skiff_bytes == outputs["skiff, one thread"], "threads changed the bytes"
    assert len(skiff_bytes) == 1, "skiff's output changed between rounds"
    reference = statistics.median(times["python zlib, level 6 (skiff before)"])
    lines = [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; nproc: {os.cpu_count()}; "
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- input: a tar of `{args.source}`, {size / 1e6:.0f} MB; {args.rounds} rounds",
        "",
        "| compressor | median time | MB/s (input) | output | vs python zlib |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(times[name])
        (out_size, _digest), *_ = outputs[name]
        lines.append(
            f"| {name} | {median:.2f} s | {size / 1e6 / median:.0f} | "
            f"{out_size / 1e6:.1f} MB ({out_size / size:.1%}) | {median / reference:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(
            "# Compressed layer writing\n\n"
            + table
            + "\n\nCommand: `.venv/bin/python "
            + " ".join(["bench/compress.py", *sys.argv[1:]])
            + "`\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
