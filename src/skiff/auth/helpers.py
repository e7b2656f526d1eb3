"""The docker-credential-helpers protocol: ``docker-credential-NAME get|store|erase``.

Helpers keep secrets in a keychain or fetch them from a cloud (ECR, GCR, ACR); talking to them the
way Docker does lets skiff use whatever ``docker login`` already set up. Protocol: the action is the
only argument; ``get``/``erase`` read the server URL on stdin, ``store`` reads
``{"ServerURL","Username","Secret"}``; ``get`` prints that same JSON. Failures are a non-zero
exit with the message on stdout (sometimes stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from skiff.auth.credentials import CredentialHelperError, CredentialHelperNotFound, Credentials

DEFAULT_TIMEOUT = 10.0
# What helpers say when they hold nothing for a server; Docker treats it as "no credentials".
NOT_FOUND_MESSAGE = "credentials not found"
# A Username of "<token>" means the Secret is an OAuth2 identity (refresh) token.
TOKEN_USERNAME = "<token>"

_MAX_SUMMARY = 300


def program(name: str) -> str:
    """The program a helper name means: ``ecr-login`` -> ``docker-credential-ecr-login``."""
    return f"docker-credential-{name}"


def helper_get(
    name: str, server_url: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Credentials | None:
    """Credentials the helper holds for ``server_url``, or None when it holds none."""
    result = _run(name, "get", server_url, timeout)
    if result is None:
        return None
    prog = program(name)
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        answer = None
    # Never quote the output here: it may be half a JSON document with the secret in it.
    if not isinstance(answer, dict):
        raise CredentialHelperError(
            prog,
            f"{prog} get returned something that is not the credentials JSON it should print",
            hint=f"check that {prog} works and is up to date",
        )
    username = answer.get("Username") or ""
    secret = answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialHelperError(
            prog,
            f"{prog} get returned credentials whose Username or Secret is not a string",
            hint=f"check that {prog} works and is up to date",
        )
    if not secret:
        return None
    source = f"credential helper {prog}"
    if username == TOKEN_USERNAME:
        return Credentials(username=username, identity_token=secret, source=source)
    return Credentials(username=username or None, password=secret, source=source)


def helper_store(
    name: str, server_url: str, username: str, secret: str, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Hands credentials for ``server_url`` to the helper to keep."""
    payload = json.dumps({"ServerURL": server_url, "Username": username, "Secret": secret})
    if _run(name, "store", payload, timeout, secrets=(secret,)) is None:
        # "Not found" makes no sense for store; report it as the failure it is.
        prog = program(name)
        raise CredentialHelperError(
            prog,
            f"{prog} store failed: it answered 'credentials not found'",
            hint=f"check that {prog} works and is up to date",
        )


def helper_erase(name: str, server_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Asks the helper to forget ``server_url``; False when it held nothing for it."""
    return _run(name, "erase", server_url, timeout) is not None


@dataclass(frozen=True)
class _Result:
    stdout: str
    stderr: str


def _run(
    name: str, action: str, stdin: str, timeout: float, secrets: Iterable[str] = ()
) -> _Result | None:
    """Runs one helper action; None when the helper says it has no credentials for the server."""
    prog = program(name)
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise CredentialHelperNotFound(
            prog,
            f"credential helper name {name!r} is not a valid name",
            hint="helper names are the part after docker-credential-, e.g. 'pass' or 'ecr-login'",
        )
    path = shutil.which(prog)
    if path is None:
        raise CredentialHelperNotFound(
            prog,
            f"credential helper {prog} is not installed (not found on PATH)",
            hint=f"install {prog}, or remove the configuration that names it",
        )
    try:
        # A session of its own, so a timeout can kill the helper and anything it started
        # (shell-script helpers run children that would keep the pipes open).
        proc = subprocess.Popen(
            [path, action],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise CredentialHelperError(
            prog,
            f"could not run credential helper {path}: {exc.strerror or exc}",
            hint=f"check that {path} is an executable program",
        ) from None
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CredentialHelperError(
            prog,
            f"{prog} {action} did not answer within {timeout:g} s",
            hint=f"the helper may be waiting for a prompt or a network; check that {prog} works",
        ) from None
    if proc.returncode == 0:
        return _Result(stdout, stderr)
    if NOT_FOUND_MESSAGE in (stdout + stderr).lower():
        return None
    summary = _summarise(stderr if stderr.strip() else stdout, secrets)
    raise CredentialHelperError(
        prog,
        f"{prog} {action} failed (exit {proc.returncode})" + (f": {summary}" if summary else ""),
        hint=f"check that {prog} is set up (logged in to its backend, keychain unlocked)",
    )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _summarise(output: str, secrets: Iterable[str]) -> str:
    """A short, secret-free digest of a helper's error output, fit for one message line."""
    text = output
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if re.search(r'"secret"\s*:', text, re.IGNORECASE):
        return "(output withheld: it may contain credentials)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Errors end with their cause (tracebacks, wrapped Go errors): keep the tail.
    summary = " | ".join(lines[-3:])
    if len(summary) > _MAX_SUMMARY:
        summary = "..." + summary[-_MAX_SUMMARY:]
    return summary
