"""The ``skiff`` command: parse, call, print, map errors to exit codes (DESIGN §1). Nothing else."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

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
from skiff.reference import parse as parse_reference
from skiff.ui import (
    CheckPrinter,
    PushProgress,
    human_bytes,
    print_error,
    print_json,
    print_report_footer,
    safe,
    stderr_console,
)

if TYPE_CHECKING:
    # The builder pulls in pydantic and the image code: imported only by the commands that
    # build, so that `skiff check` starts (and rejects a bad destination) fast.
    from skiff.image.options import BuildOptions

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
        console.print(f"Checking [bold]{safe(reference)}[/]")
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
    """Verify credentials against REGISTRY, then store them like docker login does."""
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
        safe(f"Login succeeded: {result.username} at {result.registry} "
             f"(saved in {result.stored_in})")
    )


BaseImageOpt = Annotated[
    str | None,
    typer.Option(
        "--base-image",
        envvar="SKIFF_BASE_IMAGE",
        help="Base image (default: python:X.Y-slim for cog.yaml's python_version).",
    ),
]
PlatformOpt = Annotated[
    str, typer.Option("--platform", help="Target platform: linux/amd64 or linux/arm64.")
]
DirOpt = Annotated[Path, typer.Option("--dir", "-C", help="Model folder (with cog.yaml).")]
PullOpt = Annotated[
    bool, typer.Option("--pull", help="Ask the registry for the base image again.")
]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        metavar="id=ID,src=FILE",
        help="id=ID,src=FILE: a secret for build steps that mount it (never stored in the image).",
    ),
]


def _build_options(
    base_image: str | None,
    platform: str,
    pull: bool,
    tag: str | None = None,
    secrets: list[str] | None = None,
) -> BuildOptions:
    from skiff.image.oci import Platform
    from skiff.image.options import BuildOptions
    from skiff.image.steps import parse_secret

    try:
        secret_files = dict(parse_secret(text) for text in secrets or [])
    except SkiffError as exc:
        fail(exc, False)

    try:
        parsed = Platform.parse(platform)
    except SkiffError as exc:
        fail(InvalidInput(exc.message, exc.hint), False)
    if parsed.os != "linux" or parsed.architecture not in ("amd64", "arm64"):
        fail(
            InvalidInput(
                f"unsupported platform {platform!r}", "use linux/amd64 or linux/arm64"
            ),
            False,
        )
    return BuildOptions(
        base_image=base_image, platform=parsed, refresh_base=pull, tag=tag, secrets=secret_files
    )


@app.command()
def build(
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Name the image in the cache.")
    ] = None,
    output_layout: Annotated[
        Path | None,
        typer.Option("--output-layout", help="Also export the image as an OCI layout here."),
    ] = None,
    directory: DirOpt = Path("."),
    base_image: BaseImageOpt = None,
    platform: PlatformOpt = "linux/amd64",
    pull: PullOpt = False,
    secret: SecretOpt = None,
    debug: DebugFlag = False,
) -> None:
    """Build the image from cog.yaml into the local cache (no Docker needed)."""
    from skiff.image.builder import Builder
    from skiff.image.layout import default_layout

    _debug_logging(debug)
    console = stderr_console()
    name = tag
    if name is not None:
        try:
            name = str(parse_reference(name))
        except SkiffError as exc:
            fail(exc, False)
    options = _build_options(base_image, platform, pull, name or "latest-build", secret)
    try:
        layout = default_layout()
        image = Builder(
            directory, options, layout=layout,
            on_status=lambda text: console.print(f"  {safe(text)}"),
        ).build()
        for warning in image.warnings:
            console.print(f"[yellow]warning:[/] {safe(warning)}")
        if output_layout is not None:
            layout.export(options.tag or "latest-build", output_layout)
    except SkiffError as exc:
        fail(exc, False)
    total = sum(layer.descriptor.size for layer in image.layers)
    console.print(
        f"built {image.manifest_descriptor.digest} "
        f"({len(image.layers)} layers, {human_bytes(total)})"
    )
    for layer in image.layers:
        console.print(
            f"  {layer.role:<8} {layer.descriptor.digest} {human_bytes(layer.descriptor.size)}"
        )
    if output_layout is not None:
        console.print(safe(f"exported to {output_layout} (oci:{output_layout}:{options.tag})"))


@app.command()
def push(
    reference: Annotated[
        str | None,
        typer.Argument(help="Destination, e.g. r8.im/me/model; default: image: in cog.yaml"),
    ] = None,
    directory: DirOpt = Path("."),
    base_image: BaseImageOpt = None,
    platform: PlatformOpt = "linux/amd64",
    pull: PullOpt = False,
    secret: SecretOpt = None,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> None:
    """Check the destination, build, and upload only what the registry lacks."""
    from skiff.push import PreflightInvalid, PreflightRejected, PushOptions
    from skiff.push import push as do_push

    _debug_logging(debug)
    console = stderr_console()
    if reference is None:
        reference = _reference_from_config(directory, as_json)
    options = PushOptions(build=_build_options(base_image, platform, pull, secrets=secret))
    if not as_json:
        console.print(f"Pushing [bold]{safe(reference)}[/]")
    events = PushProgress(console, show_checks=not as_json) if not as_json else None
    try:
        if events is not None:
            with events:
                result = do_push(directory, reference, options, events=events)
        else:
            result = do_push(directory, reference, options)
    except (PreflightRejected, PreflightInvalid) as exc:
        if as_json:
            document = exc.report.to_json()
            print_json(document)
        else:
            print_error(console, exc.message, exc.hint)
        raise typer.Exit(exit_code(exc)) from None
    except SkiffError as exc:
        fail(exc, as_json)
    if as_json:
        print_json(result.to_json())
        return
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {safe(warning)}")
    counts: dict[str, int] = {}
    for layer in result.layers:
        counts[str(layer.outcome)] = counts.get(str(layer.outcome), 0) + 1
    summary = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    console.print(
        f"pushed in {result.elapsed_s:.1f} s: {human_bytes(result.bytes_uploaded)} uploaded "
        f"({summary})"
    )
    typer.echo(result.pinned)


def _reference_from_config(directory: Path, as_json: bool) -> str:
    from skiff import config

    try:
        cfg = config.load(directory)
    except SkiffError as exc:
        fail(exc, as_json)
    if not cfg.image:
        fail(
            InvalidInput(
                "no destination: give one (skiff push REGISTRY/NAME) or set image: in cog.yaml"
            ),
            as_json,
        )
    return cfg.image


@app.command()
def predict(
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="NAME=VALUE, or NAME=@path for a file input."),
    ] = None,
    directory: DirOpt = Path("."),
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Where file outputs are written.")
    ] = Path("."),
) -> None:
    """Run one prediction locally with Cog's API (the model's imports must be installed)."""
    from skiff import local

    try:
        status = local.predict(directory, inputs or [], output_dir)
    except SkiffError as exc:
        fail(exc, False)
    raise typer.Exit(status)


@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    directory: DirOpt = Path("."),
) -> None:
    """Serve Cog's HTTP API locally (POST /predictions, GET /openapi.json, ...)."""
    from skiff import local

    try:
        status = local.serve(directory, port, host)
    except SkiffError as exc:
        fail(exc, False)
    raise typer.Exit(status)


@app.command()
def init(directory: DirOpt = Path(".")) -> None:
    """Write a starter cog.yaml and predict.py."""
    from skiff import local

    try:
        written = local.init(directory)
    except SkiffError as exc:
        fail(exc, False)
    for path in written:
        stderr_console().print(f"wrote {path}")


@app.command()
def version() -> None:
    """Print skiff's version."""
    typer.echo(__version__)


def main() -> None:
    """Console entry point: no traceback ever reaches the user, and Ctrl-C exits 130 at once."""
    as_json = "--json" in sys.argv[1:]
    try:
        app()
    except KeyboardInterrupt:
        # Typer turns a Ctrl-C inside a command into exit 130 itself (the push has cancelled
        # its uploads by then); this covers one that lands outside a command. Worker threads
        # blocked in a send must not keep the process alive, so leave without waiting.
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    except SkiffError as exc:
        if as_json:
            print_json({"ok": False, "error": exc.message, "hint": exc.hint})
        print_error(stderr_console(), exc.message, exc.hint)
        sys.exit(exit_code(exc))
    except Exception as exc:  # the last line of defence: a bug, reported as one
        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = "this is a bug in skiff; please report it with the command you ran"
        if as_json:
            print_json({"ok": False, "error": message, "hint": hint})
        print_error(stderr_console(), message, hint)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
