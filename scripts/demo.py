"""`make demo`: skiff against a throwaway local registry with token auth, start to finish.

Starts a real registry (Debian's docker-registry) and a token server on 127.0.0.1, with two users
(alice, bob; each may push only to their own namespace), then runs the real `skiff` commands a new
user would, showing each outcome and exit code. Everything runs in a temporary folder, with its
own Docker config and build cache, and is stopped and removed at the end.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import (  # noqa: E402
    USERS,
    RegistryServer,
    TokenIssuer,
    push_tiny_image,
    skopeo_push,
)
from support.baseimage import python_base_layout  # noqa: E402

SKIFF = str(Path(sys.executable).parent / "skiff")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def run(args: list[str], stdin: str | None = None, expect: int | None = None) -> int:
    shown = (
        " ".join(shlex.quote(a) for a in ["skiff", *args[1:]])
        if args[0] == SKIFF
        else " ".join(shlex.quote(a) for a in args)
    )
    if stdin is not None:
        shown = f"echo '***' | {shown}"
    print(f"{BOLD}$ {shown}{RESET}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(args, input=stdin, text=True, check=False)
    elapsed = time.perf_counter() - start
    print(f"{DIM}-> exit {result.returncode} in {elapsed:.2f} s{RESET}", flush=True)
    if expect is not None and result.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {result.returncode}")
    return result.returncode


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="skiff-demo-") as tmp:
        work = Path(tmp)
        os.environ["DOCKER_CONFIG"] = str(work / "docker-config")
        os.environ["SKIFF_CACHE_DIR"] = str(work / "cache")
        (work / "docker-config").mkdir()
        with (
            TokenIssuer(work / "issuer", users=USERS) as issuer,
            RegistryServer(work / "registry", token=issuer) as registry,
        ):
            host = registry.host
            print(f"A registry with token auth is running at {host}; users alice and bob.")
            # A tiny base image, so the demo needs nothing from the internet.
            push_tiny_image(registry, "alice/base", "1", user="alice", password=USERS["alice"])
            os.environ["SKIFF_BASE_IMAGE"] = f"{host}/alice/base:1"

            step("A malformed reference is refused at once, with the fix (exit 2)")
            run([SKIFF, "check", f"https://{host}/Alice/Model"], expect=2)

            step("No credentials yet: the check says how to log in (exit 3)")
            run([SKIFF, "check", f"{host}/alice/hello"], expect=3)

            step("Log in (verified against the registry, stored like docker login)")
            run(
                [SKIFF, "login", host, "-u", "alice", "--password-stdin"],
                stdin=USERS["alice"],
                expect=0,
            )

            step("alice may not push to bob's namespace: proved by a dry push (exit 3)")
            run([SKIFF, "check", f"{host}/bob/hello"], expect=3)

            step("alice's own namespace: every check passes (exit 0)")
            run(
                [SKIFF, "check", f"{host}/alice/hello:v1", "-C", str(ROOT / "examples/hello")],
                expect=0,
            )

            step("skiff push to a forbidden destination fails before any build work (exit 3)")
            run([SKIFF, "push", f"{host}/bob/hello", "-C", str(ROOT / "examples/hello")], expect=3)

            step("Build and push the example model (3 MB of weights in their own layer)")
            run(
                [SKIFF, "push", f"{host}/alice/hello:v1", "-C", str(ROOT / "examples/hello")],
                expect=0,
            )

            step("The pushed image, as skopeo sees it")
            run(
                [
                    "skopeo",
                    "inspect",
                    "--tls-verify=false",
                    "--creds",
                    f"alice:{USERS['alice']}",
                    "--format",
                    "{{.Name}} {{.Digest}} layers={{len .Layers}}",
                    f"docker://{host}/alice/hello:v1",
                ],
                expect=0,
            )

            step("Push again: nothing changed, nothing is uploaded")
            run(
                [SKIFF, "push", f"{host}/alice/hello:v1", "-C", str(ROOT / "examples/hello")],
                expect=0,
            )

            step("A typo of a destination pushed to before: refused before any build (exit 3)")
            run(
                [SKIFF, "push", f"{host}/alice/helo:v1", "-C", str(ROOT / "examples/hello")],
                expect=3,
            )
            step("--new says a new repository is meant: the check passes (exit 0)")
            run([SKIFF, "check", f"{host}/alice/helo:v1", "--new"], expect=0)

            step("One push, two destinations: checked first, built once, the copy mounted")
            run(
                [
                    SKIFF,
                    "push",
                    f"{host}/alice/hello:v2",
                    f"{host}/alice/hello-copy:v1",
                    "-C",
                    str(ROOT / "examples/hello"),
                ],
                expect=0,
            )

            if "--quick" not in sys.argv:
                step("A model with a system package (jq) and a run step, on a Debian base")
                print(
                    "The base is made once with debootstrap and cached (about 2 minutes the "
                    "first time); the\nsteps run in a bubblewrap sandbox and download jq "
                    "from Debian's archive.",
                    flush=True,
                )
                skopeo_push(
                    python_base_layout(),
                    registry,
                    "alice/debian",
                    "bookworm",
                    user="alice",
                    password=USERS["alice"],
                )
                os.environ["SKIFF_BASE_IMAGE"] = f"{host}/alice/debian:bookworm"
                example = str(ROOT / "examples/with-system-packages")
                run([SKIFF, "push", f"{host}/alice/prices:v1", "-C", example], expect=0)
                step("Again: every step is cached, nothing runs, nothing is uploaded")
                run([SKIFF, "push", f"{host}/alice/prices:v1", "-C", example], expect=0)

                step("Run the pushed image: pulled, unpacked once, Cog's server under bubblewrap")
                print(
                    "As `cog predict IMAGE` does with Docker: the image's own Env, WorkingDir "
                    "and Cmd; the\noutput alone on stdout, the model's setup on stderr.",
                    flush=True,
                )
                document = '{"items": [{"price": 2}, {"price": 3.5}, {"price": 4.25}]}'
                run(
                    [SKIFF, "predict", f"{host}/alice/prices:v1", "-i", f"document={document}"],
                    expect=0,
                )
        print("\nThe demo registry is stopped and its files are removed.")


if __name__ == "__main__":
    main()
