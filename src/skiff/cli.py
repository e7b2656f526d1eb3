"""The ``skiff`` command: parse, call, print, map errors to exit codes (DESIGN §1). Nothing else.

The parser is the standard library's argparse, and every command imports what it needs only
when it runs: a rejected push must answer in a fraction of a second, interpreter start included,
and a CLI framework (or the builder, pydantic, rich) imported up front would cost most of that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from skiff import __version__
from skiff.errors import BuildFailed, DestinationRejected, InvalidInput, SkiffError, UploadFailed

if TYPE_CHECKING:
    from skiff.destinations import CogDestination, Resolved
    from skiff.image.oci import Platform
    from skiff.image.options import BuildOptions
    from skiff.ui import Console

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_REJECTED, EXIT_BUILD, EXIT_UPLOAD = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM and SIGHUP give 143 and 129, as shells do
# How long a failed command waits for its threads to end before it leaves them behind.
_LINGER_SECONDS = 2.0

DESCRIPTION = (
    "Build Cog models into OCI images without Docker, and push them to any registry — "
    "checking the destination first."
)
EPILOG = (
    "exit codes: 0 success, 1 unexpected error, 2 invalid input (reference, cog.yaml, flags), "
    "3 destination rejected, 4 build failed, 5 upload failed, 130 interrupted (Ctrl-C), "
    "143 terminated (SIGTERM), 129 hung up (SIGHUP). "
    "Run 'skiff COMMAND --help' for a command's options."
)


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


def _console() -> Console:
    from skiff.ui import stderr_console

    return stderr_console()


def print_failure(error: SkiffError, as_json: bool) -> int:
    """Tells the user what failed and how to fix it; returns the exit code."""
    from skiff.ui import print_error, print_json

    if as_json:
        print_json({"ok": False, "error": error.message, "hint": error.hint})
    print_error(_console(), error.message, error.hint)
    return exit_code(error)


def fail(error: SkiffError, as_json: bool) -> NoReturn:
    raise SystemExit(print_failure(error, as_json))


def _debug_logging(enabled: bool) -> None:
    if enabled:
        import logging

        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="debug: %(name)s: %(message)s"
        )
        # httpx logs method, URL and status at INFO; never headers, and URL queries (presigned
        # storage URLs, upload state: credentials) are hidden.
        from skiff.registry.redact import RedactQueries

        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactQueries())
        logging.getLogger("httpx").setLevel(logging.INFO)
        logging.getLogger("skiff").setLevel(logging.DEBUG)


# -- commands: each takes the parsed arguments and returns the exit code ----------------------


def check(args: argparse.Namespace) -> int:
    """Check that REFERENCE can be pushed to, without pushing anything."""
    from skiff.preflight import Intent, Severity, run_preflight
    from skiff.ui import CheckPrinter, print_json, print_report_footer, safe

    _debug_logging(args.debug)
    console = _console()
    # The image code (to parse a platform) is imported only for one other than the default.
    platform = args.platform
    if platform != "linux/amd64":
        platform = str(_parse_platform(platform, args.json))
    resolved = _destination(args.reference, args.dir, args.json)
    if not args.json:
        console.print("Checking ", (safe(resolved.describe()), "bold"))
    report = run_preflight(
        resolved.reference,
        model_dir=args.dir,
        on_result=None if args.json else CheckPrinter(console),
        intent=Intent(platform, new_repository=args.new),
    )
    if args.json:
        document = report.to_json()
        if resolved.name is not None:
            document["destination"] = resolved.name
        print_json(document)
    else:
        print_report_footer(
            console, report, f"ready: skiff push {resolved.name or report.reference}"
        )
    failure = report.failure
    if failure is None:
        return EXIT_OK
    return EXIT_INPUT if failure.severity is Severity.INPUT else EXIT_REJECTED


def login(args: argparse.Namespace) -> int:
    """Verify credentials against REGISTRY, then store them like docker login does."""
    import getpass

    from skiff.login import login as do_login
    from skiff.ui import safe

    _debug_logging(args.debug)
    username: str | None = args.username
    if username is None:
        if not sys.stdin.isatty() or args.password_stdin:
            fail(InvalidInput("a username is required", "pass it with -u USERNAME"), False)
        username = input("Username: ").strip()
    if args.password_stdin:
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
        result = do_login(args.registry, username, password)
    except SkiffError as exc:
        fail(exc, False)
    _console().print(
        safe(
            f"Login succeeded: {result.username} at {result.registry} (saved in {result.stored_in})"
        )
    )
    return EXIT_OK


def _build_options(
    args: argparse.Namespace, tag: str | None = None, *, as_json: bool = False
) -> BuildOptions:
    """The build's options from the flags, checked before any work starts. The secrets' parser
    lives with the build steps, whose module is imported only when a secret is given."""
    from skiff.image.options import BuildOptions

    secrets: dict[str, Path] = {}
    for text in args.secret or []:
        secret_id, source = _parse_secret(text, as_json)
        secrets[secret_id] = source
    return BuildOptions(
        base_image=args.base_image or None,
        platform=_parse_platform(args.platform, as_json),
        refresh_base=args.pull,
        tag=tag,
        secrets=secrets,
        sdk_version=getattr(args, "sdk_version", None) or None,
    )


def _parse_platform(text: str, as_json: bool) -> Platform:
    from skiff.image.oci import Platform

    try:
        parsed = Platform.parse(text)
    except SkiffError as exc:
        fail(InvalidInput(exc.message, exc.hint), as_json)
    if parsed.os != "linux" or parsed.architecture not in ("amd64", "arm64"):
        fail(
            InvalidInput(f"unsupported platform {text!r}", "use linux/amd64 or linux/arm64"),
            as_json,
        )
    return parsed


def _parse_secret(text: str, as_json: bool) -> tuple[str, Path]:
    from skiff.image.steps import parse_secret

    try:
        return parse_secret(text)
    except SkiffError as exc:
        fail(exc, as_json)


def build(args: argparse.Namespace) -> int:
    """Build the image from cog.yaml into the local cache (no Docker needed)."""
    from skiff.image.builder import Builder
    from skiff.image.layout import default_layout
    from skiff.reference import parse as parse_reference
    from skiff.ui import human_bytes, print_warning, safe

    _debug_logging(args.debug)
    console = _console()
    name: str | None = args.tag
    if name is not None:
        try:
            name = str(parse_reference(name))
        except SkiffError as exc:
            fail(exc, False)
    options = _build_options(args, name or "latest-build")
    output_layout: Path | None = args.output_layout
    try:
        layout = default_layout()
        image = Builder(
            args.dir,
            options,
            layout=layout,
            on_status=lambda text: console.print(f"  {safe(text)}"),
        ).build()
        for warning in image.warnings:
            print_warning(console, warning)
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
    return EXIT_OK


def push(args: argparse.Namespace) -> int:
    """Check the destination, build, and upload only what the registry lacks."""
    from skiff.push import PreflightInvalid, PreflightRejected, PushOptions
    from skiff.push import push as do_push
    from skiff.ui import PushProgress, human_bytes, print_error, print_json, print_warning, safe

    as_json: bool = args.json
    _debug_logging(args.debug)
    console = _console()
    if len(args.reference) > 1:
        return _push_several(args, console)
    resolved = _destination(args.reference[0] if args.reference else None, args.dir, as_json)
    reference = resolved.reference
    options = PushOptions(build=_build_options(args, as_json=as_json), new_repository=args.new)
    if not as_json:
        console.print("Pushing ", (safe(resolved.describe()), "bold"))
    events = PushProgress(console, show_checks=True) if not as_json else None
    try:
        if events is not None:
            with events:
                result = do_push(args.dir, reference, options, events=events)
        else:
            result = do_push(args.dir, reference, options)
    except (PreflightRejected, PreflightInvalid) as exc:
        if as_json:
            print_json(exc.report.to_json())
        else:
            print_error(console, exc.message, exc.hint)
        return exit_code(exc)
    except SkiffError as exc:
        fail(exc, as_json)
    if as_json:
        print_json(result.to_json())
        return EXIT_OK
    for warning in result.warnings:
        print_warning(console, warning)
    counts: dict[str, int] = {}
    for layer in result.layers:
        counts[str(layer.outcome)] = counts.get(str(layer.outcome), 0) + 1
    summary = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    console.print(
        f"pushed in {result.elapsed_s:.1f} s: {human_bytes(result.bytes_uploaded)} uploaded "
        f"({summary})"
    )
    print(result.pinned, flush=True)
    return EXIT_OK


def _push_several(args: argparse.Namespace, console: Console) -> int:
    """``skiff push REF1 REF2 ...``: every destination checked first, then one build for all."""
    from skiff.fanout import SeveralRefused, push_all, unique
    from skiff.push import PushOptions
    from skiff.ui import PushProgress, human_bytes, print_error, print_json, safe

    as_json: bool = args.json
    targets = unique([_destination(text, args.dir, as_json) for text in args.reference])
    options = PushOptions(build=_build_options(args, as_json=as_json), new_repository=args.new)
    if not as_json:
        console.print(
            f"Pushing to {len(targets)} destinations: "
            + ", ".join(safe(t.describe()) for t in targets)
        )

    def tell(target: Resolved, phase: str) -> None:
        if not as_json:
            console.print(f"{phase.capitalize()} ", (safe(target.describe()), "bold"))

    events = PushProgress(console, show_checks=True) if not as_json else None
    try:
        if events is not None:
            with events:
                deliveries = push_all(
                    args.dir, targets, options, events=events, on_destination=tell
                )
        else:
            deliveries = push_all(args.dir, targets, options)
    except SeveralRefused as exc:
        if as_json:
            print_json(exc.to_json())
        else:
            for target, report in exc.reports:
                failure = report.failure
                if failure is not None:
                    print_error(console, f"{target.describe()}: {failure.message}", failure.hint)
            print_error(console, exc.summary, exc.hint)
        return EXIT_INPUT if exc.input_only else EXIT_REJECTED
    except SkiffError as exc:
        fail(exc, as_json)
    failed = [d for d in deliveries if d.error is not None]
    if as_json:
        digests = {str(d.result.digest) for d in deliveries if d.result is not None}
        print_json(
            {
                "ok": not failed,
                "digest": digests.pop() if len(digests) == 1 else None,
                "destinations": [d.to_json() for d in deliveries],
            }
        )
    else:
        for delivery in deliveries:
            where = safe(delivery.destination.describe())
            if delivery.result is not None:
                result = delivery.result
                console.print(
                    f"pushed {where} in {result.elapsed_s:.1f} s: "
                    f"{human_bytes(result.bytes_uploaded)} uploaded"
                )
                print(result.pinned, flush=True)
            elif delivery.error is not None:
                print_error(console, f"{where}: {delivery.error.message}", delivery.error.hint)
    if not failed:
        return EXIT_OK
    codes = [exit_code(d.error) for d in failed if d.error is not None]
    return EXIT_UPLOAD if EXIT_UPLOAD in codes else codes[0]


def _destination(text: str | None, directory: Path, as_json: bool) -> Resolved:
    """Where the command goes: a reference, a name from skiff.yaml, or cog.yaml's own."""
    from skiff import destinations

    try:
        cog = _reference_from_config(directory, as_json) if text is None else None
        return destinations.resolve(text, directory, cog)
    except SkiffError as exc:
        fail(exc, as_json)


def _reference_from_config(directory: Path, as_json: bool) -> CogDestination | None:
    """cog.yaml's image: and model: (None without a cog.yaml: skiff.yaml may still name one)."""
    from skiff import config
    from skiff.destinations import CogDestination

    if not (directory / config.FILENAME).is_file():
        return None
    try:
        cfg = config.load(directory)
    except SkiffError as exc:
        fail(exc, as_json)
    return CogDestination(cfg.image, cfg.model)


def predict(args: argparse.Namespace) -> int:
    """Run one prediction with Cog's runtime: the model folder, or a built or pushed image."""
    from skiff import local

    try:
        return local.predict(args.image, args.dir, args.input or [], args.output, as_json=args.json)
    except SkiffError as exc:
        fail(exc, False)


def serve(args: argparse.Namespace) -> int:
    """Serve Cog's HTTP API with Cog's runtime: the model folder, or a built or pushed image."""
    from skiff import local

    try:
        return local.serve(args.image, args.dir, args.port, args.host)
    except SkiffError as exc:
        fail(exc, False)


def init(args: argparse.Namespace) -> int:
    """Write a starter cog.yaml and predict.py."""
    from skiff import local

    try:
        written = local.init(args.dir)
    except SkiffError as exc:
        fail(exc, False)
    console = _console()
    for path in written:
        console.print(f"wrote {path}")
    return EXIT_OK


def version(args: argparse.Namespace) -> int:
    """Print skiff's version."""
    print(__version__, flush=True)
    return EXIT_OK


# -- the parser --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with the usage errors of a CLI that says where to look next (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"error: {message}\nfix: run '{self.prog} --help' for the options\n")


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


Command = Callable[[argparse.Namespace], int]


def _command(commands: argparse._SubParsersAction[_Parser], function: Command) -> _Parser:
    doc = (function.__doc__ or "").strip()
    parser = commands.add_parser(
        function.__name__,
        help=doc,
        description=doc,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.set_defaults(command=function, parser=parser)
    return parser


def _dir(parser: argparse.ArgumentParser, help_text: str = "Model folder, with cog.yaml") -> None:
    parser.add_argument(
        "-C",
        "--dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help=f"{help_text} (default: .).",
    )


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print one JSON document on stdout.")


def _new(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--new",
        action="store_true",
        help="A new repository is meant, even one a typo away from a known destination.",
    )


def _debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Log every HTTP request to stderr (never credentials).",
    )


def _build_flags(parser: argparse.ArgumentParser) -> None:
    _dir(parser)
    parser.add_argument(
        "--base-image",
        metavar="IMAGE",
        default=os.environ.get("SKIFF_BASE_IMAGE") or None,
        help="Base image (default: python:X.Y-slim for cog.yaml's python_version; "
        "env: SKIFF_BASE_IMAGE).",
    )
    parser.add_argument(
        "--platform",
        default="linux/amd64",
        metavar="OS/ARCH",
        help="Target platform: linux/amd64 or linux/arm64 (default: linux/amd64).",
    )
    parser.add_argument(
        "--pull", action="store_true", help="Ask the registry for the base image again."
    )
    parser.add_argument(
        "--secret",
        action="append",
        metavar="id=ID,src=FILE",
        help="A secret for build steps that mount it (never stored in the image); repeatable.",
    )
    parser.add_argument(
        "--sdk-version",
        metavar="VERSION",
        help="Cog's runtime (the cog and coglet packages) to install, e.g. 0.23.1 "
        "(default: build.sdk_version in cog.yaml, else the version skiff was tested with).",
    )


def parser() -> argparse.ArgumentParser:
    """The whole command line: cheap to build (no imports), so it is built on every run."""
    root = _Parser(
        prog="skiff",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    commands = root.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    p = _command(commands, check)
    p.add_argument(
        "reference",
        metavar="REFERENCE",
        help="Where the image would go, e.g. ghcr.io/me/model:v1, or a name from skiff.yaml",
    )
    _dir(p, "Model folder whose cog.yaml is checked too")
    p.add_argument(
        "--platform",
        default="linux/amd64",
        metavar="OS/ARCH",
        help="Platform the image would be built for (default: linux/amd64).",
    )
    _new(p)
    _json(p)
    _debug(p)

    p = _command(commands, login)
    p.add_argument(
        "registry", metavar="REGISTRY", help="Registry host, e.g. ghcr.io or localhost:5000"
    )
    p.add_argument("-u", "--username", help="User name.")
    p.add_argument(
        "--password-stdin", action="store_true", help="Read the password or token from stdin."
    )
    _debug(p)

    p = _command(commands, build)
    p.add_argument("-t", "--tag", metavar="NAME", help="Name the image in the cache.")
    p.add_argument(
        "--output-layout",
        type=Path,
        metavar="DIR",
        help="Also export the image as an OCI layout here.",
    )
    _build_flags(p)
    _debug(p)

    p = _command(commands, push)
    p.add_argument(
        "reference",
        nargs="*",
        metavar="REFERENCE",
        help="Destination, e.g. r8.im/me/model, or a name from skiff.yaml; several: all are "
        "checked first, then one build goes to each (default: model: or image: in cog.yaml, "
        "or skiff.yaml's only destination)",
    )
    _build_flags(p)
    _new(p)
    _json(p)
    _debug(p)

    p = _command(commands, predict)
    p.add_argument(
        "image",
        nargs="?",
        metavar="IMAGE",
        help="Run this image (a name from skiff build -t, or a reference) instead of the folder.",
    )
    p.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="An input: NAME=VALUE, or NAME=@path for a file input; repeatable.",
    )
    _dir(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="Where the output is written: a file, or a folder for output.EXT "
        "(default: file outputs to ./output.EXT, the rest on stdout).",
    )
    p.add_argument(
        "--json", action="store_true", help="Print the whole prediction response as JSON."
    )

    p = _command(commands, serve)
    p.add_argument(
        "image",
        nargs="?",
        metavar="IMAGE",
        help="Serve this image (a name from skiff build -t, or a reference) instead of the folder.",
    )
    p.add_argument(
        "-p", "--port", type=int, default=5000, help="Port to listen on (default: 5000)."
    )
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1).")
    _dir(p)

    p = _command(commands, init)
    _dir(p)

    _command(commands, version)
    return root


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` (without the program name) and run the command; returns the exit code."""
    cli = parser()
    if not argv:  # help on stdout and exit 2, as skiff always did
        cli.print_help()
        return EXIT_INPUT
    # Unknown flags are reported by the command's own parser, whose usage is the one that helps.
    args, unknown = cli.parse_known_args(argv)
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    command: Command = args.command
    if command not in (serve, predict):  # those run a model server, and stop it their own way
        _catch_stop_signals()
    return command(args)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt: whatever cleans up after
    Ctrl-C (upload sessions cancelled, uv ended, temporary files removed) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# What a process manager, a CI job's end or `docker stop` (SIGTERM), or a closed terminal
# (SIGHUP) sends. Their default action kills the process on the spot, leaving uv running and
# temporary files behind.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# A second signal this soon after the first is not let cut its cleanup short (bounded anyway);
# one later than that (the first went unheard somewhere) stops the command again.
_CLEANUP_SECONDS = 5.0
_stopped_at: float | None = None


def _stop(signum: int, frame: object) -> None:
    global _stopped_at
    now = time.monotonic()
    if _stopped_at is not None and now - _stopped_at < _CLEANUP_SECONDS:
        return
    _stopped_at = now
    raise Stopped(signum)


def _catch_stop_signals() -> None:
    """Turns SIGTERM and SIGHUP into ``Stopped``; one the user set to be ignored (``nohup``)
    stays ignored, as Python leaves an ignored SIGINT."""
    for signum in _STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _stop)


def _interrupted(exc: KeyboardInterrupt, as_json: bool) -> NoReturn:
    """Says which signal stopped the command (one line; with ``--json``, one document unless
    the command printed its own), then leaves at once with 128 + the signal's number: a push
    has cancelled its uploads by now, and worker threads blocked in a send must not keep the
    process alive."""
    signum = exc.signum if isinstance(exc, Stopped) else int(signal.SIGINT)
    message = (
        "interrupted"
        if signum == signal.SIGINT
        else (f"interrupted by {signal.Signals(signum).name}")
    )
    with contextlib.suppress(Exception):  # stdout or stderr may be gone with the terminal
        from skiff import ui

        if as_json and ui.json_documents == 0:
            ui.print_json(
                {"ok": False, "error": message, "hint": None, "signal": signal.Signals(signum).name}
            )
    with contextlib.suppress(Exception):
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(128 + signum)


def main() -> None:
    """Console entry point: no traceback ever reaches the user, and Ctrl-C, SIGTERM and SIGHUP
    exit 130, 143 and 129 at once, each after the same cleanup."""
    as_json = "--json" in sys.argv[1:]
    try:
        code = run(sys.argv[1:])
    except KeyboardInterrupt as exc:
        _interrupted(exc, as_json)
    except SkiffError as exc:
        code = print_failure(exc, as_json)
    except SystemExit as exc:  # fail() in a command, or argparse (--help exits 0)
        code = _exit_status(exc.code)
    except Exception as exc:  # the last line of defence: a bug, reported as one
        from skiff.ui import print_error, print_json

        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = "this is a bug in skiff; please report it with the command you ran"
        if as_json:
            print_json({"ok": False, "error": message, "hint": hint})
        print_error(_console(), message, hint)
        code = EXIT_ERROR
    _leave(code)


def _exit_status(code: object) -> int:
    """The status a ``SystemExit`` stands for: None is success, a message is an error."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_ERROR


def _leave(code: int) -> NoReturn:
    """Exits with ``code``. After a failure, work still running in skiff's threads (an upload
    blocked in a send, a dependency install being stopped) gets a moment to end cleanly, and is
    then left behind rather than holding the process: everything skiff writes is atomic."""
    if code == EXIT_OK:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    deadline = time.monotonic() + _LINGER_SECONDS
    others = [
        t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
    ]
    try:
        for thread in others:
            thread.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # the error is told already: Ctrl-C only cuts the wait short
        os._exit(code)
    if any(thread.is_alive() for thread in others):
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
