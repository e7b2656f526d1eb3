"""Docker's ``config.json``: read credentials as ``docker`` does, write them as ``docker login``.

Users already ran ``docker login`` (or ``aws ecr get-login-password | docker login``, ``gcloud auth
configure-docker``...); reading the same file and the same helpers means skiff needs no login of
its own. Lookup for a registry: the helper for it (``credHelpers[host]``, else ``credsStore``),
then the ``auths`` entry. Unlike Docker, an ``auths`` entry is still used when the helper has
nothing: a hand-written entry should not be silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from skiff.auth.credentials import (
    ANONYMOUS,
    CredentialConfigError,
    CredentialHelperNotFound,
    Credentials,
)
from skiff.auth.helpers import DEFAULT_TIMEOUT, helper_erase, helper_get, helper_store, program
from skiff.errors import InvalidInput
from skiff.fsutil import write_atomic
from skiff.reference import DOCKER_HUB

# The key Docker uses for Docker Hub, in "auths", "credHelpers" and towards helpers.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})

_T = TypeVar("_T")


def config_dir() -> Path:
    """The Docker config folder: ``$DOCKER_CONFIG``, else ``~/.docker``."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def config_path() -> Path:
    """The Docker config file that holds ``auths``, ``credsStore`` and ``credHelpers``."""
    return config_dir() / "config.json"


def server_key(registry: str) -> str:
    """The key Docker files a registry's credentials under (and hands to helpers)."""
    host = _hostname(registry)
    return DOCKER_HUB_KEY if host == DOCKER_HUB else host


def resolve(registry: str, *, timeout: float = DEFAULT_TIMEOUT) -> Credentials:
    """Credentials for ``registry`` (normalised ``host[:port]``, ``docker.io`` for Docker Hub).

    ANONYMOUS when the file does not exist or holds nothing for the registry.
    """
    path = config_path()
    data = _load(path)
    if data is None:
        return ANONYMOUS
    config = _Config.parse(path, data)
    host = _hostname(registry)
    helper = config.helper_for(host)
    if helper is not None:
        name, setting = helper
        found = _with_helper(
            path, name, setting, lambda: helper_get(name, server_key(host), timeout=timeout)
        )
        if found is not None:
            return found
    for key, entry in config.auths_for(host):
        creds = _entry_credentials(path, key, entry)
        if not creds.anonymous:
            return creds
    return ANONYMOUS


def store(registry: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Saves a login like ``docker login``; returns the config file it recorded the login in.

    With a helper configured the secret goes to the helper and the file gets an empty entry (as
    Docker writes, which also drops any plaintext copy); otherwise ``auths[key].auth``.
    """
    if not username or ":" in username:
        raise InvalidInput(
            "the username must be non-empty and may not contain ':'",
            hint="give the registry username with -u USER",
        )
    if not password:
        raise InvalidInput("the password is empty", hint="pass the password or token on stdin")
    path = config_path()
    with _locked(path):
        data = _load(path) or {}
        config = _Config.parse(path, data)
        host = _hostname(registry)
        key = server_key(host)
        auths = data.get("auths")
        if auths is None:
            auths = data["auths"] = {}
        helper = config.helper_for(host)
        if helper is not None:
            name, setting = helper
            _with_helper(
                path,
                name,
                setting,
                lambda: helper_store(name, key, username, password, timeout=timeout),
            )
            auths[key] = {}
        else:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            auths[key] = {"auth": token}
        _write(path, data)
    return path


def erase(registry: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Forgets a login like ``docker logout``; False when there was nothing to forget."""
    path = config_path()
    if not path.exists():
        return False
    with _locked(path):
        data = _load(path)
        if data is None:
            return False
        config = _Config.parse(path, data)
        host = _hostname(registry)
        removed = False
        stale = [key for key, _ in config.auths_for(host)]
        if stale:
            for key in stale:
                del config.auths[key]
            _write(path, data)
            removed = True
    helper = config.helper_for(host)
    if helper is not None:
        name, setting = helper
        erased = _with_helper(
            path, name, setting, lambda: helper_erase(name, server_key(host), timeout=timeout)
        )
        removed = erased or removed
    return removed


@dataclass(frozen=True)
class _Config:
    """The parts of config.json that concern credentials, shape-checked."""

    auths: dict[str, Any]  # the file's own dict: edits to it are edits to the document
    creds_store: str | None
    cred_helpers: dict[str, str]

    @classmethod
    def parse(cls, path: Path, data: dict[str, Any]) -> _Config:
        auths = data.get("auths")
        if auths is None:
            auths = {}
        elif not isinstance(auths, dict):
            raise CredentialConfigError(path, '"auths" must be an object of registry -> entry')
        creds_store = data.get("credsStore")
        if creds_store is not None and not isinstance(creds_store, str):
            raise CredentialConfigError(path, '"credsStore" must be a string (a helper name)')
        helpers = data.get("credHelpers")
        if helpers is None:
            helpers = {}
        elif not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
            raise CredentialConfigError(
                path, '"credHelpers" must be an object of registry -> helper name'
            )
        return cls(auths, creds_store or None, helpers)

    def helper_for(self, host: str) -> tuple[str, str] | None:
        """(helper name, setting that chose it), as Docker picks: credHelpers, else credsStore."""
        for key in _matching(self.cred_helpers, host):
            if self.cred_helpers[key]:
                return self.cred_helpers[key], f'"credHelpers" entry "{key}"'
        if self.creds_store:
            return self.creds_store, '"credsStore"'
        return None

    def auths_for(self, host: str) -> Iterator[tuple[str, Any]]:
        for key in _matching(self.auths, host):
            yield key, self.auths[key]


def _matching(table: dict[str, Any], host: str) -> list[str]:
    """Keys of ``table`` naming ``host``: Docker's own key first, then any alias or URL form."""
    exact = server_key(host)
    keys = [exact] if exact in table else []
    keys += [k for k in table if k != exact and _hostname(k) == host]
    return keys


def _hostname(key: str) -> str:
    """``https://Host:5000/v1/`` -> ``host:5000``; every Docker Hub alias -> ``docker.io``."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_HOSTS else host


def _entry_credentials(path: Path, key: str, entry: Any) -> Credentials:
    where = f'"auths" entry "{key}"'
    if not isinstance(entry, dict):
        raise CredentialConfigError(path, f"{where} must be an object")
    fields: dict[str, str | None] = {}
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        value = entry.get(name)
        if value is not None and not isinstance(value, str):
            raise CredentialConfigError(path, f'{where}: "{name}" must be a string')
        fields[name] = value or None
    username, password = fields["username"], fields["password"]
    if fields["auth"]:
        username, password = _decode_auth(path, where, fields["auth"])
    return Credentials(
        username=username or None,
        password=password or None,
        identity_token=fields["identitytoken"],
        registry_token=fields["registrytoken"],
        source=f"{path} ({where})",
    )


def _decode_auth(path: Path, where: str, auth: str) -> tuple[str, str]:
    """Decodes base64 ``user:password``; the value itself never goes into a message."""
    text = "".join(auth.split())
    text += "=" * (-len(text) % 4)  # some tools drop the padding; Docker's Go decoder does not care
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialConfigError(
            path, f'{where}: "auth" is not valid base64 of USER:PASSWORD'
        ) from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialConfigError(
            path, f'{where}: "auth" does not decode to USER:PASSWORD (no ":" in it)'
        )
    return username, password


def _with_helper(path: Path, name: str, setting: str, call: Callable[[], _T]) -> _T:
    """Runs a helper call; a missing helper is reported with the config line that asked for it."""
    try:
        return call()
    except CredentialHelperNotFound as exc:
        raise CredentialHelperNotFound(
            exc.helper,
            f"{exc.message} (named by {setting} in {path})",
            hint=f"install {program(name)}, or remove the {setting} from {path}",
        ) from None


def _load(path: Path) -> dict[str, Any] | None:
    """The parsed file; None when it does not exist (an empty file is ``{}``, as in Docker)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialConfigError(
            path,
            f"cannot read the file: {reason}",
            hint="fix the file's permissions, or point DOCKER_CONFIG at another folder",
        ) from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the document text may hold secrets.
        raise CredentialConfigError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint=f"fix the JSON syntax in {path}, or move the file away and log in again",
        ) from None
    if not isinstance(data, dict):
        raise CredentialConfigError(
            path,
            "the file must hold a JSON object",
            hint=f"move {path} away and log in again",
        )
    return data


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on a file beside config.json while a login reads, changes and
    writes it back: concurrent logins (eight CI jobs at once) then keep every entry instead of
    overwriting each other's. Docker takes no lock, so a concurrent ``docker login`` can still
    win a race; skiff's own never lose one. The lock is released when the process dies."""
    target = path.resolve() if path.is_symlink() else path  # the file a symlink points at
    lock = target.with_name(f".{target.name}.lock")
    try:
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CredentialConfigError(
            path,
            f"cannot lock the file ({lock}): {exc.strerror or exc}",
            hint=f"fix the permissions of {target.parent}, or set DOCKER_CONFIG to a writable one",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replaces the file atomically with mode 0600, so a crash never leaves half a config."""
    target = path.resolve() if path.is_symlink() else path  # edit the file a symlink points at
    try:
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700, parents=True)
        text = json.dumps(data, indent="\t", ensure_ascii=False) + "\n"
        write_atomic(target, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise CredentialConfigError(
            path,
            f"cannot write the file: {exc.strerror or exc}",
            hint=f"fix the permissions of {target.parent}, or set DOCKER_CONFIG to a writable one",
        ) from None
