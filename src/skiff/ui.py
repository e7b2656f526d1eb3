"""Rendering for people: check lists, errors and hints on stderr (JSON goes to stdout instead)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from skiff.preflight import CheckResult, Report, Status

_MARKS = {
    Status.OK: ("[green]✓[/]", "ok"),
    Status.FAILED: ("[red]✗[/]", "FAILED"),
    Status.SKIPPED: ("[dim]-[/]", "skipped"),
}


def stderr_console() -> Console:
    # highlight=False: rich would otherwise colour numbers and paths in our messages at random.
    return Console(stderr=True, highlight=False, soft_wrap=True)


class CheckPrinter:
    """Prints each check as soon as it finishes, so a slow registry shows where it is stuck."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, result: CheckResult) -> None:
        mark, word = _MARKS[result.status]
        if not self.console.is_terminal:
            mark = f"{word:<7}"
        ms = f"{result.elapsed_ms:.0f} ms"
        text = escape(result.message)
        style = "dim" if result.status is Status.SKIPPED else ""
        line = f"  {mark} {result.name:<16} {text}  [dim]{ms}[/]"
        self.console.print(f"[{style}]{line}[/]" if style else line)


def print_report_footer(console: Console, report: Report, success: str) -> None:
    failure = report.failure
    if failure is None:
        console.print(f"[green]{escape(success)}[/] [dim]({report.elapsed_ms:.0f} ms)[/]")
        return
    print_error(console, failure.message, failure.hint)


def print_error(console: Console, message: str, hint: str | None) -> None:
    console.print(f"[red bold]error:[/] {escape(message)}")
    if hint:
        console.print(f"[yellow]fix:[/] {escape(hint)}")


def print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()
