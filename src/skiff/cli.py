"""The ``skiff`` command: parse, call, print, map errors to exit codes (DESIGN §1). Nothing else."""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from skiff import __version__
from skiff.errors import (
    BuildFailed,
    DestinationRejected,
    InvalidInput,
    SkiffError,
    UploadFailed,
)
from skiff.preflight import Severity, run_preflight
from skiff.ui import CheckPrinter, print_error, print_json, print_report_footer, stderr_console

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_REJECTED, EXIT_BUILD, EXIT_UPLOAD = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="skiff",
    help="Build Cog models into OCI images without Docker, and push them to any registry — "
    "checking the destination first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DebugFlag = Annotated[
    bool, typer.Option("--debug", help="Log every HTTP request to stderr (never credentials).")
]


def exit_code(error: SkiffError) -> int:
    for kind, code in (
        (InvalidInput, EXIT_INPUT),
        (DestinationRejected, EXIT_REJECTED),
        (BuildFailed, EXIT_BUILD),
        (UploadFailed, EXIT_UPLOAD),
    ):
        if isinstance(error, kind):
            return code
    return EXIT_ERROR


def fail(error: SkiffError, as_json: bool) -> NoReturn:
    if as_json:
        print_json({"ok": False, "error": error.message, "hint": error.hint})
    print_error(stderr_console(), error.message, error.hint)
    raise typer.Exit(exit_code(error))


def _debug_logging(enabled: bool) -> None:
    if enabled:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="debug: %(name)s: %(message)s"
        )
        # httpx logs method, URL and status at INFO; never headers, so never credentials.
        logging.getLogger("httpx").setLevel(logging.INFO)
        logging.getLogger("skiff").setLevel(logging.DEBUG)


@app.command()
def check(
    reference: Annotated[
        str, typer.Argument(help="Where the image would go, e.g. ghcr.io/me/model:v1")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", "-C", help="Model folder whose cog.yaml is checked too.")
    ] = Path("."),
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> None:
    """Check that REFERENCE can be pushed to, without pushing anything."""
    _debug_logging(debug)
    console = stderr_console()
    if not as_json:
        console.print(f"Checking [bold]{reference}[/]")
    report = run_preflight(
        reference, model_dir=directory, on_result=None if as_json else CheckPrinter(console)
    )
    if as_json:
        print_json(report.to_json())
    else:
        print_report_footer(console, report, f"ready: skiff push {report.reference}")
    failure = report.failure
    if failure is None:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_INPUT if failure.severity is Severity.INPUT else EXIT_REJECTED)


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host, e.g. ghcr.io or localhost:5000")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="User name.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password or token from stdin.")
    ] = False,
    debug: DebugFlag = False,
) -> None:
    """Verify credentials against REGISTRY and store them in the Docker config, like docker login."""
    from skiff.login import login as do_login

    _debug_logging(debug)
    console = stderr_console()
    if username is None:
        if not sys.stdin.isatty() or password_stdin:
            fail(InvalidInput("a username is required", "pass it with -u USERNAME"), False)
        username = input("Username: ").strip()
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        fail(
            InvalidInput(
                "no password: stdin is not a terminal",
                "pipe the password in with --password-stdin",
            ),
            False,
        )
    try:
        result = do_login(registry, username, password)
    except SkiffError as exc:
        fail(exc, False)
    console.print(
        f"Login succeeded: {result.username} at {result.registry} (saved in {result.stored_in})"
    )


@app.command()
def version() -> None:
    """Print skiff's version."""
    typer.echo(__version__)


def main() -> None:
    """Console entry point: no traceback ever reaches the user, and Ctrl-C exits 130."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except SkiffError as exc:
        print_error(stderr_console(), exc.message, exc.hint)
        sys.exit(exit_code(exc))
    except Exception as exc:  # the last line of defence: a bug, reported as one
        print_error(
            stderr_console(),
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in skiff; please report it with the command you ran",
        )
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
