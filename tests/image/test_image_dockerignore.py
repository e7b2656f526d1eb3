"""`.dockerignore` semantics, case by case (expected answers are Docker's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.errors import InvalidInput
from skiff.image.dockerignore import DockerIgnore

CASES = [
    # (patterns, path, excluded)
    (["*.py"], "a.py", True),
    (["*.py"], "dir/a.py", False),  # * does not cross "/": top level only
    (["**/*.py"], "dir/sub/a.py", True),
    (["**/*.py"], "a.py", True),  # ** also matches zero segments
    (["data"], "data/x/y.bin", True),  # a matched directory excludes its content
    (["/data"], "data/file", True),  # leading / is the folder root
    (["./data/"], "data/file", True),  # cleaned like Go's filepath.Clean
    (["data/**"], "data/a/b", True),
    (["data/**"], "data", False),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[ab].txt"], "a.txt", True),
    (["[^ab].txt"], "a.txt", False),
    (["[^ab].txt"], "c.txt", True),
    (["file.txt"], "fileXtxt", False),  # "." is literal
    (["\\*.txt"], "*.txt", True),  # escaped star
    (["\\*.txt"], "a.txt", False),
    (["*", "!keep.py"], "keep.py", False),
    (["*", "!keep.py"], "other.py", True),
    (["*", "!keep.py", "keep.py"], "keep.py", True),  # last match wins
    (["models", "!models/small.bin"], "models/small.bin", False),
    (["models", "!models/small.bin"], "models/big.bin", True),
    (["**/.DS_Store"], "a/b/.DS_Store", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/y/c", False),
    (["(x)+{y}$"], "(x)+{y}$", True),  # regex specials are literal
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), CASES)
def test_docker_semantics(patterns: list[str], path: str, excluded: bool) -> None:
    assert DockerIgnore.parse("\n".join(patterns)).excluded(path) is excluded


def test_comments_blanks_bom_and_spaces() -> None:
    ignore = DockerIgnore.parse("\ufeff# comment\n\n   secret.txt  \n#*.py\n ! secret.txt\n")
    assert [p.text for p in ignore.patterns] == ["secret.txt", "secret.txt"]
    assert ignore.patterns[1].exception
    assert not ignore.excluded("a.py")
    assert not ignore.excluded("secret.txt")


def test_invalid_pattern_names_the_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n[abc\n")
    with pytest.raises(InvalidInput, match="line 2"):
        DockerIgnore.load(tmp_path)


def test_missing_file_excludes_nothing(tmp_path: Path) -> None:
    assert not DockerIgnore.load(tmp_path).excluded("anything")


def test_pruning_is_safe_only_without_matching_exceptions() -> None:
    ignore = DockerIgnore.parse("models\n!models/keep/*.bin\n")
    assert ignore.may_reinclude_below("models")
    assert ignore.may_reinclude_below("models/keep")
    assert not ignore.may_reinclude_below("other")
    assert DockerIgnore.parse("!**/*.py").may_reinclude_below("anything")
