"""`.dockerignore` matching with Docker's own semantics (moby/patternmatcher).

Patterns are Go ``filepath.Match`` globs over ``/``-separated paths relative to the folder:
``*`` and ``?`` never cross a ``/``, ``**`` matches any number of path segments (even none),
``[...]`` is a character class, ``\\`` escapes. A pattern also excludes everything below a
directory it matches. ``!`` re-includes; the last matching pattern wins. Lines starting with
``#`` are comments, and a leading ``/`` is ignored (paths are always relative to the folder).
Note that, as in Docker, ``*.py`` matches only at the top level; ``**/*.py`` matches anywhere.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skiff.errors import InvalidInput

_REGEX_SPECIAL = set(".+()|{}$^")
_GLOB_SPECIAL = "*?[\\"


@dataclass(frozen=True)
class Pattern:
    """One compiled line: ``exception`` is True for ``!`` lines (they re-include)."""

    text: str
    exception: bool
    regex: re.Pattern[str]

    @property
    def literal_prefix(self) -> str:
        """The part before the first wildcard: what every path it matches starts with."""
        cut = min((i for i, ch in enumerate(self.text) if ch in _GLOB_SPECIAL), default=None)
        return self.text if cut is None else self.text[:cut]

    def matches(self, path: str) -> bool:
        """True if the pattern matches ``path`` or one of its parent directories."""
        if self.regex.match(path):
            return True
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:i])) for i in range(1, len(parts)))


def _translate(pattern: str) -> str:
    """Go-glob-with-``**`` to a Python regex, following patternmatcher's ``compile``."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":  # "**/" behaves as "**"
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append(r"\\")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "]") else i + 1)
            if end < 0:
                raise ValueError("unclosed '['")
            out.append(pattern[i : end + 1])  # Go and Python classes agree ([a-z], [^a-z])
            i = end
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
        i += 1
    out.append("$")
    return "".join(out)


def _clean(pattern: str) -> str:
    # Go's filepath.Clean, then drop a leading "/" (paths are relative to the folder).
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def compile_pattern(line: str, where: str = "pattern") -> Pattern:
    exception = line.startswith("!")
    text = _clean(line[1:].strip() if exception else line)
    try:
        regex = re.compile(_translate(text), re.DOTALL)
    except (ValueError, re.error) as exc:
        raise InvalidInput(
            f"invalid {where} {line!r}: {exc}",
            "fix the pattern: see https://docs.docker.com/build/concepts/context/#dockerignore-files",
        ) from None
    return Pattern(text, exception, regex)


@dataclass(frozen=True)
class DockerIgnore:
    """An ordered list of patterns; ``excluded(path)`` applies them as Docker does."""

    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = ".dockerignore") -> DockerIgnore:
        patterns = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            if raw.startswith("#"):
                continue
            line = raw.strip()
            if not line or line == "!":
                continue
            patterns.append(compile_pattern(line, f"pattern on line {number} of {source}"))
        return cls(tuple(patterns))

    @classmethod
    def load(cls, folder: Path) -> DockerIgnore:
        """The folder's ``.dockerignore`` (an empty matcher if there is none)."""
        path = folder / ".dockerignore"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @classmethod
    def of(cls, lines: Iterable[str]) -> DockerIgnore:
        return cls(tuple(compile_pattern(line) for line in lines))

    def __add__(self, other: DockerIgnore) -> DockerIgnore:
        """Both lists, ``other``'s last (so its ``!`` lines can re-include what ours exclude)."""
        return DockerIgnore(self.patterns + other.patterns)

    def excluded(self, path: str) -> bool:
        """True if ``path`` (relative, ``/``-separated) is excluded from the build context."""
        matched = False
        for pattern in self.patterns:
            # Only a pattern that could flip the current answer needs evaluating.
            if pattern.exception != matched:
                continue
            if pattern.matches(path):
                matched = not pattern.exception
        return matched

    def may_reinclude_below(self, directory: str) -> bool:
        """False when no ``!`` pattern can match anything under ``directory`` (safe to prune)."""
        below = directory + "/"
        for pattern in self.patterns:
            if not pattern.exception:
                continue
            prefix = pattern.literal_prefix
            if below.startswith(prefix) or prefix.startswith(below) or prefix == directory:
                return True
        return False
