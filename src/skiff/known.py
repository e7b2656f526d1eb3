"""Known destinations: where skiff has pushed successfully, so that a typo of one is caught.

A small JSON file in the cache directory (``$SKIFF_CACHE_DIR/known-destinations.json``), one
entry per repository: the last reference and digest pushed, when, and how many times. It holds
no credentials, only what ``skiff push`` prints anyway. Every update is a read-modify-write
under an exclusive lock, replaced atomically, so concurrent pushes neither lose an entry nor
leave a half-written file; a file that cannot be read counts as empty (it is only a memory,
never a reason to stop a push).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.fsutil import write_atomic
from skiff.reference import Reference, Repository

FILENAME = "known-destinations.json"
VERSION = 1
# Beyond this many repositories the least recently pushed are forgotten: the file stays small,
# and a destination unused for that long is no longer one a typo is likely to aim at.
MAX_ENTRIES = 500


@dataclass(frozen=True)
class Known:
    """One repository skiff has pushed to."""

    repository: str  # REGISTRY/PATH
    reference: str  # the last reference pushed there
    digest: str
    last: str  # when, UTC, ISO 8601
    count: int

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.repository.split("/", 1)[1]

    @property
    def last_date(self) -> str:
        return self.last[:10]

    def describe(self) -> str:
        times = "once" if self.count == 1 else f"{self.count} times"
        return f"pushed {times}, last {self.last_date}"


def cache_dir() -> Path:
    """The cache directory, as the build cache has it (without importing the image code)."""
    configured = os.environ.get("SKIFF_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "skiff"


def store_path() -> Path:
    return cache_dir() / FILENAME


def load(path: Path | None = None) -> list[Known]:
    """Every known destination, most pushed first; none if the file is missing or unreadable."""
    entries = _read(path or store_path())
    known = [k for k in (_entry(repo, value) for repo, value in entries.items()) if k]
    return sorted(known, key=lambda k: (-k.count, k.repository))


def record(reference: Reference, digest: object, path: Path | None = None) -> None:
    """Remember a successful push. Never raises: failing to remember must not fail a push that
    has succeeded (the worst outcome is one typo less caught)."""
    with contextlib.suppress(OSError):
        _record(reference, str(digest), path or store_path())


def _record(reference: Reference, digest: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        entries = _read(path)
        key = str(reference.repository)
        previous = _entry(key, entries.get(key))
        entries[key] = {
            "reference": str(reference),
            "digest": digest,
            "last": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "count": (previous.count if previous else 0) + 1,
        }
        if len(entries) > MAX_ENTRIES:
            recent = sorted(entries, key=lambda k: str(entries[k].get("last", "")), reverse=True)
            entries = {k: entries[k] for k in recent[:MAX_ENTRIES]}
        document = {"version": VERSION, "destinations": dict(sorted(entries.items()))}
        write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the file: concurrent pushes take turns at read-modify-write."""
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    destinations = document.get("destinations") if isinstance(document, dict) else None
    return dict(destinations) if isinstance(destinations, dict) else {}


def _entry(repository: str, value: object) -> Known | None:
    if not isinstance(value, dict) or "/" not in repository:
        return None
    count = value.get("count")
    if not isinstance(count, int) or count < 1:
        return None
    return Known(
        repository,
        str(value.get("reference", repository)),
        str(value.get("digest", "")),
        str(value.get("last", "")),
        count,
    )


# -- near misses --------------------------------------------------------------------------------


def max_edits(path: str) -> int:
    """How far a typo may be: two edits, or one in a short path (where two change too much)."""
    return 1 if len(path) <= 6 else 2


def distance(a: str, b: str, limit: int = 3) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from ``a`` to ``b``; anything
    over ``limit`` is reported as ``limit + 1`` (only near misses matter)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[len(b)], limit + 1)


def near(repository: Repository, known: list[Known] | None = None) -> Known | None:
    """The known destination ``repository`` most likely misspells: same registry, a path one or
    two edits away (the closest, then the most pushed). None if it is known itself, or far from
    every known one."""
    candidates = load() if known is None else known
    path = repository.path
    best: tuple[int, int, Known] | None = None
    for entry in candidates:
        if entry.registry != repository.registry:
            continue
        if entry.path == path:
            return None  # pushed there before: no typo
        edits = distance(path, entry.path)
        if 1 <= edits <= max_edits(entry.path) and (
            best is None or (edits, -entry.count) < (best[0], -best[1])
        ):
            best = (edits, entry.count, entry)
    return best[2] if best else None
