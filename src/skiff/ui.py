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


def safe(text: str) -> str:
    """``text`` ready for rich: markup escaped, control characters shown as ``\\xNN``.

    Registries write part of our messages (their error bodies); they must not drive the user's
    terminal with escape sequences or fake lines of our own. Line breaks (a tool's output quoted
    in an error) are kept, but indented, so that they read as the quote they are.
    """
    shown = "\n    ".join(
        "".join(
            char if char.isprintable() else f"\\x{ord(char):02x}" if ord(char) < 0x100
            else f"\\u{ord(char):04x}"
            for char in line
        )
        for line in text.rstrip("\n").split("\n")
    )
    return escape(shown)


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
        text = safe(result.message)
        style = "dim" if result.status is Status.SKIPPED else ""
        line = f"  {mark} {result.name:<16} {text}  [dim]{ms}[/]"
        self.console.print(f"[{style}]{line}[/]" if style else line)


def print_report_footer(console: Console, report: Report, success: str) -> None:
    failure = report.failure
    if failure is None:
        console.print(f"[green]{safe(success)}[/] [dim]({report.elapsed_ms:.0f} ms)[/]")
        return
    print_error(console, failure.message, failure.hint)


def print_error(console: Console, message: str, hint: str | None) -> None:
    console.print(f"[red bold]error:[/] {safe(message)}")
    if hint:
        console.print(f"[yellow]fix:[/] {safe(hint)}")


def print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def _short(digest: object) -> str:
    text = str(digest)
    return text.split(":", 1)[-1][:12]


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


class PushProgress:
    """Push events for people: live bars on a terminal, one plain line per event otherwise."""

    def __init__(self, console: Console, *, show_checks: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console
        self.checks = CheckPrinter(console) if show_checks else None
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[object, Any] = {}
        self.total: Any = None
        self._started = False

    def __enter__(self) -> PushProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.progress.stop()

    def _ensure(self) -> None:
        if self.live and not self._started:
            self.progress.start()
            self.total = self.progress.add_task("total", total=0)
            self._started = True

    def check(self, result: CheckResult) -> None:
        if self.checks is not None:
            self.checks(result)

    def status(self, text: str) -> None:
        if not self.live:
            self.console.print(f"  {safe(text)}")

    def blob_started(self, digest: object, size: int, role: str) -> None:
        if self.live:
            self._ensure()
            self.tasks[digest] = self.progress.add_task(f"{role:<8} {_short(digest)}", total=size)
            total = self.progress.tasks[self.total].total or 0
            self.progress.update(self.total, total=total + size)

    def blob_progress(self, digest: object, done: int) -> None:
        if self.live and digest in self.tasks:
            task = self.tasks[digest]
            before = self.progress.tasks[task].completed
            self.progress.update(task, completed=done)
            self.progress.advance(self.total, done - before)

    def blob_finished(self, result: Any, role: str) -> None:
        outcome = str(result.outcome)
        if self.live and result.digest in self.tasks:
            task = self.tasks[result.digest]
            before = self.progress.tasks[task].completed
            self.progress.update(
                task, completed=result.size,
                description=f"{role:<8} {_short(result.digest)} {outcome}",
            )
            self.progress.advance(self.total, result.size - before)
        elif not self.live:
            self.console.print(
                f"  {outcome:<8} {role:<8} {_short(result.digest)} {human_bytes(result.size)}"
            )
