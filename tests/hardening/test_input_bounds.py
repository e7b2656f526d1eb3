"""cog.yaml that would make skiff read or build without end: too large a file, aliases that
expand to billions of values ("billion laughs"), an alias inside itself. Each fails at once
with exit 2 and a sentence, within a memory cap."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import pytest
from hardutil import SKIFF, make_model

from support import RegistryServer

MEMORY_CAP = 1 << 30  # address space: skiff itself needs a fraction of it


def billion_laughs() -> str:
    """About 8 KB of cog.yaml whose aliases expand to 9**9 values, under a field skiff reads."""
    laugh = "ha" * 380
    lines = ["build:", '  python_version: "3.11"', 'predict: "predict.py:Predictor"']
    lines.append("environment:")
    lines.append("  - &a0 [" + ", ".join([f'"{laugh}"'] * 9) + "]")
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


CASES = {
    "billion-laughs": (billion_laughs(), "its aliases expand to more than"),
    "too-large": ("build:\n  python_version: '3.11'\n" + "# padding\n" * 200_000, "larger than"),
    "self-alias": ("build: &b\n  python_packages: [*b]\n", "refers to the value that holds it"),
}


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["build", "check"])
def test_a_cog_yaml_beyond_the_bounds_fails_at_once_with_exit_2(
    tmp_path: Path, case: str, command: str, request: pytest.FixtureRequest
) -> None:
    text, expected = CASES[case]
    model = make_model(tmp_path)
    (model / "cog.yaml").write_text(text)
    if case == "billion-laughs":
        assert 6_000 < len(text) < 12_000
    args = ["build", "-C", str(model)]
    if command == "check":
        registry: RegistryServer = request.getfixturevalue("plain_registry")
        args = ["check", f"{registry.host}/demo/bounded:v1", "-C", str(model), "--json"]
    started = time.monotonic()
    done = subprocess.run(
        [str(SKIFF), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        preexec_fn=capped,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert took < 5, f"took {took:.1f} s"
    if command == "build":
        assert expected in done.stderr
    else:
        report = json.loads(done.stdout)
        assert any(
            c["status"] == "failed" and expected in c["message"] for c in report["checks"]
        ), report
