"""The command line itself: help, usage errors (exit 2, a message, never a traceback), and what a
command imports before it answers (a rejected destination must be told in a fraction of a
second, interpreter start included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli_check import skiff

COMMANDS = ("check", "login", "build", "push", "predict", "serve", "init", "version")
# Imported only where they are needed: the builder, cog.yaml's schema, colour and progress bars.
HEAVY = ("pydantic", "yaml", "rich", "skiff.image", "skiff.config", "typer", "click")


def test_no_arguments_prints_the_commands_and_exits_2() -> None:
    run = skiff()
    assert run.code == 2, run.output
    for command in COMMANDS:
        assert command in run.stdout


def test_help_lists_every_command_and_the_exit_codes() -> None:
    run = skiff("--help")
    assert run.code == 0, run.output
    for command in COMMANDS:
        assert command in run.stdout
    assert "3 destination rejected" in run.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("check", ["REFERENCE", "--dir", "-C", "--json", "--debug"]),
        ("login", ["REGISTRY", "--username", "-u", "--password-stdin"]),
        (
            "build",
            [
                "--tag",
                "-t",
                "--output-layout",
                "--base-image",
                "--platform",
                "--pull",
                "--secret",
                "SKIFF_BASE_IMAGE",
            ],
        ),
        (
            "push",
            [
                "REFERENCE",
                "--dir",
                "-C",
                "--base-image",
                "--platform",
                "--pull",
                "--secret",
                "--json",
                "SKIFF_BASE_IMAGE",
                "cog.yaml",
            ],
        ),
        ("predict", ["--input", "-i", "NAME=@path", "--output", "-o"]),
        ("serve", ["--port", "-p", "5000", "--host", "127.0.0.1"]),
        ("init", ["--dir"]),
    ],
)
def test_each_command_explains_its_options(command: str, options: list[str]) -> None:
    run = skiff(command, "--help")
    assert run.code == 0, run.output
    for option in options:
        assert option in run.stdout, option


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        (["check"], "required: REFERENCE"),
        (["push", "--bogus", "a/b"], "unrecognized arguments: --bogus"),
        (["push", "--json", "--bogus", "a/b"], "unrecognized arguments: --bogus"),
        (["build", "--platform"], "--platform: expected one argument"),
        (["serve", "--port", "x"], "invalid int value: 'x'"),
        (["push", "--platform", "linux/s390x", "a/b"], "unsupported platform 'linux/s390x'"),
        (["push", "--secret", "nonsense", "a/b"], "invalid --secret 'nonsense'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args: list[str], words: str) -> None:
    run = skiff(*args)
    assert run.code == 2, run.output
    assert words in run.stderr
    assert "error:" in run.stderr
    if args[0] != "push" or "--json" not in args:
        assert run.stdout == ""


def test_usage_error_names_the_command_to_ask_for_help() -> None:
    run = skiff("push", "--bogus")
    assert "usage: skiff push" in run.stderr
    assert "skiff push --help" in run.stderr


def test_version() -> None:
    run = skiff("version")
    assert run.code == 0, run.output
    assert run.stdout.strip() == "0.1.0"


def test_colour_on_a_terminal_keeps_registry_text_literal(tmp_path: Path) -> None:
    """FORCE_COLOR stands in for a terminal: colour is drawn, the text stays the same."""
    run = skiff("check", "Ghcr.io/Me/[bold]x", env={"FORCE_COLOR": "1"})
    assert run.code == 2, run.output
    assert "\x1b[" in run.stderr  # coloured
    assert "[bold]x" in run.stderr  # the user's text is shown, not interpreted as markup


def _modules_after(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """Run the CLI in a fresh interpreter; its exit code and every module it imported."""
    script = (
        "import json, sys\n"
        "from skiff.cli import run\n"
        f"code = run({args!r})\n"
        "sys.stdout.write('\\n' + json.dumps([code, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SKIFF_CACHE_DIR": str(tmp_path / "cache")},
        cwd=tmp_path,
    )
    assert "Traceback" not in done.stderr, done.stderr
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, set(modules)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_a_rejected_destination_is_told_without_the_heavy_imports(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "cog.yaml").write_text("build:\n  python_version: '3.11'\npredict: predict.py:P\n")
    code, modules = _modules_after(["check", "127.0.0.1:1/a/b", "-C", str(model)], tmp_path)
    assert code == 3
    assert "httpx" in modules  # the registry was asked: the run proves something
    assert _heavy(modules) == []


def test_version_imports_nothing_of_the_registry(tmp_path: Path) -> None:
    code, modules = _modules_after(["version"], tmp_path)
    assert code == 0
    assert _heavy(modules) == []
    assert "httpx" not in modules and "skiff.preflight" not in modules
