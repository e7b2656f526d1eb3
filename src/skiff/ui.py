"""Rendering for people: check lists, errors and hints on stderr (JSON goes to stdout instead).

rich is imported only when stderr is a terminal (colour, live progress bars): the plain output
a pipe or a log file gets costs nothing to produce, and a rejected push answers sooner for it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from skiff.preflight import CheckResult, Report, Status

if TYPE_CHECKING:
    import rich.console

# A piece of a line: plain text, or (text, rich style). Text is never parsed as markup, so what
# registries write into our messages is shown as it is.
Segment = str | tuple[str, str]

_MARKS = {
    Status.OK: ("✓", "green", "ok"),
    Status.FAILED: ("✗", "red", "FAILED"),
    Status.SKIPPED: ("-", "dim", "skipped"),
}


def safe(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``.

    Registries write part of our messages (their error bodies); they must not drive the user's
    terminal with escape sequences or fake lines of our own. Line breaks (a tool's output quoted
    in an error) are kept, but indented, so that they read as the quote they are.
    """
    return "\n    ".join(
        "".join(
            char
            if char.isprintable()
            else f"\\x{ord(char):02x}"
            if ord(char) < 0x100
            else f"\\u{ord(char):04x}"
            for char in line
        )
        for line in text.rstrip("\n").split("\n")
    )


def _is_terminal(file: TextIO) -> bool:
    """rich's own rule (TTY_COMPATIBLE, FORCE_COLOR, then isatty), decided without rich."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "1"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color != ""
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Console:
    """Lines for people on stderr: plain text to a pipe or a file; colour on a terminal."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file
        self.is_terminal = _is_terminal(self.file)
        self._rich: rich.console.Console | None = None

    @property
    def file(self) -> TextIO:
        return self._file or sys.stderr

    def print(self, *segments: Segment) -> None:
        if not self.is_terminal:
            text = "".join(s if isinstance(s, str) else s[0] for s in segments)
            self.file.write(text + "\n")
            self.file.flush()
            return
        from rich.text import Text

        self.rich().print(Text.assemble(*segments))

    def rich(self) -> rich.console.Console:
        """The rich console behind a terminal (one, so that live progress and lines mix)."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            # highlight=False: rich would otherwise colour numbers and paths at random.
            self._rich = RichConsole(
                file=self._file,
                stderr=self._file is None,
                highlight=False,
                soft_wrap=True,
                force_terminal=self.is_terminal,
            )
        return self._rich


def stderr_console() -> Console:
    return Console()


class CheckPrinter:
    """Prints each check as soon as it finishes, so a slow registry shows where it is stuck."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, result: CheckResult) -> None:
        mark, colour, word = _MARKS[result.status]
        shown: Segment = (mark, colour) if self.console.is_terminal else f"{word:<7}"
        ms = f"{result.elapsed_ms:.0f} ms"
        if result.status is Status.SKIPPED:
            self.console.print(
                "  ", shown, (f" {result.name:<16} {safe(result.message)}  {ms}", "dim")
            )
        else:
            self.console.print(
                "  ", shown, f" {result.name:<16} {safe(result.message)}  ", (ms, "dim")
            )


def print_report_footer(console: Console, report: Report, success: str) -> None:
    failure = report.failure
    if failure is None:
        console.print((safe(success), "green"), " ", (f"({report.elapsed_ms:.0f} ms)", "dim"))
        return
    print_error(console, failure.message, failure.hint)


def print_error(console: Console, message: str, hint: str | None) -> None:
    console.print(("error:", "red bold"), f" {safe(message)}")
    if hint:
        console.print(("fix:", "yellow"), f" {safe(hint)}")


def print_warning(console: Console, message: str) -> None:
    console.print(("warning:", "yellow"), f" {safe(message)}")


# JSON documents printed so far: ``--json`` promises exactly one, whatever stops the command.
json_documents = 0


def print_json(document: dict[str, Any]) -> None:
    global json_documents
    json_documents += 1
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
        self.console = console
        self.checks = CheckPrinter(console) if show_checks else None
        self.live = console.is_terminal
        self.progress: Any = None  # rich's Progress, made when the first bar is drawn
        self.tasks: dict[object, Any] = {}
        self.total: Any = None

    def __enter__(self) -> PushProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _ensure(self) -> None:
        if self.live and self.progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console.rich(),
                transient=False,
            )
            self.progress.start()
            self.total = self.progress.add_task("total", total=0)

    def check(self, result: CheckResult) -> None:
        if self.checks is not None:
            self.checks(result)

    def status(self, text: str) -> None:
        if not self.live:
            self.console.print(f"  {safe(text)}")

    def _task(self, task_id: Any) -> Any:
        # By id: rich's task list is ordered, and ids stop matching positions once a bar goes.
        return next(task for task in self.progress.tasks if task.id == task_id)

    def blob_started(self, key: object, size: int | None, role: str) -> None:
        if self.live:
            self._ensure()
            # A layer streamed while it is built has no digest or size yet: an open-ended bar,
            # counted in the total once it is known.
            label = _short(key) if size is not None else "(as it is built)"
            self.tasks[key] = self.progress.add_task(f"{role:<8} {label}", total=size)
            if size is not None:
                total = self._task(self.total).total or 0
                self.progress.update(self.total, total=total + size)

    def blob_progress(self, key: object, done: int) -> None:
        if self.live and key in self.tasks:
            task = self.tasks[key]
            before = self._task(task).completed
            self.progress.update(task, completed=done)
            if self._task(task).total is not None:
                self.progress.advance(self.total, done - before)

    def blob_finished(self, key: object, result: Any, role: str) -> None:
        if result is None:  # given up here; the blob is announced again
            if self.live and key in self.tasks:
                self.progress.remove_task(self.tasks.pop(key))
            return
        outcome = str(result.outcome)
        if self.live and key in self.tasks:
            task = self.tasks[key]
            counted = self._task(task).total is not None
            before = self._task(task).completed if counted else 0
            if not counted:
                total = self._task(self.total).total or 0
                self.progress.update(self.total, total=total + result.size)
            self.progress.update(
                task,
                total=result.size,
                completed=result.size,
                description=f"{role:<8} {_short(result.digest)} {outcome}",
            )
            self.progress.advance(self.total, result.size - before)
        elif not self.live:
            self.console.print(
                f"  {outcome:<8} {role:<8} {_short(result.digest)} {human_bytes(result.size)}"
            )
