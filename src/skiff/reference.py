"""Image references (``HOST/PATH:TAG@DIGEST``): parsing, normalisation and fix suggestions.

The grammar is Docker's (distribution/reference), so a reference Docker accepts means the same
thing here. On top of it every refusal says what is wrong and where, and, when the fix is clear,
carries the corrected reference in ``ReferenceError.suggestion`` so the CLI can ask "did you mean".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn

from skiff.digest import Digest
from skiff.errors import InvalidInput

DOCKER_HUB = "docker.io"
MAX_NAME_LENGTH = 255  # of the whole normalised name, host included
MAX_TAG_LENGTH = 128

# Registries users push to most; host -> the name people know it by.
WELL_KNOWN_HOSTS: Mapping[str, str] = MappingProxyType(
    {
        "docker.io": "Docker Hub",
        "ghcr.io": "GitHub Container Registry",
        "gcr.io": "Google Container Registry",
        "quay.io": "Quay",
        "r8.im": "Replicate",
        "public.ecr.aws": "Amazon ECR Public",
        "registry.gitlab.com": "GitLab Container Registry",
        "mcr.microsoft.com": "Microsoft Container Registry",
        "nvcr.io": "NVIDIA NGC",
    }
)

# Other names Docker Hub's registry answers to; Docker itself normalises them to docker.io.
_DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{MAX_TAG_LENGTH - 1}}}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(
    rf"(?:(?P<domain>{_LABEL}(?:\.{_LABEL})*)|\[(?P<ipv6>[0-9a-f:]+)\])(?::(?P<port>[0-9]+))?"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _typo_table() -> dict[str, str]:
    """Host names people type for a well-known registry -> the registry they meant."""
    typos = {
        "docker.com": DOCKER_HUB,
        "www.docker.com": DOCKER_HUB,
        "hub.docker.com": DOCKER_HUB,
        "dockerhub.com": DOCKER_HUB,
        "dockerhub.io": DOCKER_HUB,
        "github.com": "ghcr.io",
        "replicate.com": "r8.im",
        "gitlab.com": "registry.gitlab.com",
    }
    for label, tld in (
        ("r8", "im"),
        ("ghcr", "io"),
        ("gcr", "io"),
        ("quay", "io"),
        ("docker", "io"),
        ("nvcr", "io"),
    ):
        for wrong in ("io", "im", "in", "oi", "i", "o", "om", "co", "com", "net", "org", "ai"):
            typos.setdefault(f"{label}.{wrong}", f"{label}.{tld}")
        for i in range(len(label) - 1):
            swapped = label[:i] + label[i + 1] + label[i] + label[i + 2 :]
            typos.setdefault(f"{swapped}.{tld}", f"{label}.{tld}")
    # A real registry is never a typo of another one (ghcr.io is one letter from gcr.io).
    for host in (*WELL_KNOWN_HOSTS, *_DOCKER_HUB_ALIASES):
        typos.pop(host, None)
    return typos


_TYPOS: Mapping[str, str] = MappingProxyType(_typo_table())

_NAME_HINT = (
    "a repository path is lowercase letters and digits, separated inside a component by '.', "
    "'_', '__' or dashes, and components are joined by '/'"
)
_TAG_HINT = (
    "a tag is letters, digits, '_', '.' and '-', does not start with '.' or '-', "
    f"and is at most {MAX_TAG_LENGTH} characters"
)
_DIGEST_HINT = "a digest is 'sha256:' followed by 64 lowercase hexadecimal characters"
_HOST_HINT = (
    "a registry host is DNS labels (letters, digits, inner '-') joined by '.', optionally with "
    "':PORT'; an IPv6 address goes in brackets, like [::1]:5000"
)


class ReferenceError(InvalidInput):
    """A reference that does not parse; ``suggestion`` is the corrected reference, if clear."""

    def __init__(
        self, message: str, hint: str | None = None, suggestion: str | None = None
    ) -> None:
        super().__init__(message, hint)
        self.suggestion = suggestion


@dataclass(frozen=True)
class Repository:
    """A repository in a registry: where blobs and manifests live, and the unit of permission."""

    registry: str  # normalised host[:port]; "docker.io" for Docker Hub
    path: str  # e.g. "library/ubuntu"

    @property
    def api_host(self) -> str:
        """The host[:port] that serves the /v2/ API (Docker Hub's differs from its name)."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    def scope(self, *actions: str) -> str:
        """A token scope such as ``repository:alice/model:push,pull``."""
        return f"repository:{self.path}:{','.join(actions)}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class Reference:
    repository: Repository
    tag: str | None = None
    digest: Digest | None = None

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest if any, else the tag, else "latest"."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.repository, tag, None)

    def __str__(self) -> str:
        text = str(self.repository)
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Parse ``text`` into a normalised Reference; ``str()`` of the result is its canonical form.

    Raises ReferenceError saying what is wrong and where, with a corrected reference in
    ``.suggestion`` when the fix is clear.
    """
    _check_surface(text)
    name_tag, digest = _split_digest(text)
    name, tag = _split_tag(text, name_tag)
    repository = _parse_name(text, name, suffix=text[len(name) :])
    return Reference(repository, tag, digest)


def is_loopback_host(registry: str) -> bool:
    """True for localhost, 127.0.0.0/8 and [::1], with or without a port.

    Docker talks plain HTTP to these without being told to, and so does skiff.
    """
    host = registry.strip().lower()
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]+", rest)):
            return False
    elif host.count(":") > 1:
        address = host  # a bare IPv6 address: its colons are not a port separator
    else:
        address, colon, port = host.partition(":")
        if colon and not re.fullmatch(r"[0-9]+", port):
            return False
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


# --- errors and suggestions -----------------------------------------------------------------


def _show(text: str) -> str:
    """The user's text, quoted with control characters escaped, shortened if it is very long."""
    if len(text) > 100:
        text = f"{text[:60]}...{text[-30:]}"
    return repr(text)


def _suggest(text: str, fix: str | None) -> str | None:
    """``fix`` if it parses; else the suggestion its own error makes; else None.

    Chaining lets "https://ghcr.io/Alice/" become "ghcr.io/alice" one fix at a time. Each fix
    removes one kind of fault and none adds one back, so the chain is short and always ends.
    """
    if fix is None or fix == text:
        return None
    try:
        parse(fix)
    except ReferenceError as error:
        return error.suggestion
    return fix


def _fail(text: str, problem: str, hint: str, fix: str | None = None) -> NoReturn:
    raise ReferenceError(
        f"invalid image reference {_show(text)}: {problem}", hint, _suggest(text, fix)
    )


# --- the grammar, outside in ----------------------------------------------------------------


def _check_surface(text: str) -> None:
    """Faults of the whole string: empty, whitespace, a URL scheme, a bare ID or digest."""
    example = "give a reference such as ghcr.io/OWNER/MODEL:TAG"
    if not text:
        raise ReferenceError("the image reference is empty", example)
    stripped = text.strip()
    if not stripped:
        raise ReferenceError("the image reference is only whitespace", example)
    if stripped != text:
        _fail(text, "leading or trailing whitespace", "remove the surrounding spaces", stripped)
    space = next((i for i, char in enumerate(text) if char.isspace()), None)
    if space is not None:
        _fail(
            text,
            f"whitespace at character {space + 1}",
            "an image reference contains no spaces",
            _close_whitespace(text),
        )
    scheme = _SCHEME.match(text)
    if scheme:
        _fail(
            text,
            f"'{scheme.group(0)}' is a URL scheme, not part of an image reference",
            f"leave out '{scheme.group(0)}': a reference is HOST/PATH:TAG",
            text[scheme.end() :],
        )
    if _HEX64.fullmatch(text):
        _fail(
            text, "this is an image ID, not a repository name", "give a repository, like NAME:TAG"
        )
    if re.fullmatch(r"sha256:[0-9a-fA-F]{12,64}", text):  # a pasted digest, maybe shortened
        _fail(text, "a digest alone is not an image reference", "write NAME@sha256:...")


def _close_whitespace(text: str) -> str:
    """Spaces next to a separator go; a space between two words becomes a dash."""
    closed = re.sub(r"\s*([/:@.])\s*", r"\1", text)
    return re.sub(r"\s+", "-", closed.strip())


def _split_digest(text: str) -> tuple[str, Digest | None]:
    name_tag, at, raw = text.partition("@")
    if not at:
        return text, None
    if not name_tag:
        _fail(text, "no repository name before '@'", "write NAME@sha256:...")
    if not raw:
        _fail(text, "'@' at the end with no digest after it", _DIGEST_HINT, name_tag)
    if "@" in raw:
        _fail(text, "'@' appears more than once", "'@' comes once, before the digest")
    try:
        return name_tag, Digest.parse(raw)
    except InvalidInput:
        pass
    algorithm, colon, hex_part = raw.rpartition(":")
    if not colon and _HEX64.fullmatch(raw):
        _fail(
            text,
            "the digest has no 'sha256:' prefix",
            _DIGEST_HINT,
            f"{name_tag}@sha256:{raw.lower()}",
        )
    if colon and algorithm.lower() == "sha256" and _HEX64.fullmatch(hex_part):
        _fail(text, "the digest must be lowercase", _DIGEST_HINT, f"{name_tag}@{raw.lower()}")
    if colon and algorithm.lower() != "sha256":
        _fail(text, f"unsupported digest algorithm {algorithm!r}", "skiff supports sha256 digests")
    if not colon and _TAG.fullmatch(raw) and ":" not in name_tag.rpartition("/")[2]:
        _fail(
            text,
            f"'@' must be followed by a digest, and {raw!r} looks like a tag",
            "a tag follows ':', a digest follows '@'",
            f"{name_tag}:{raw}",
        )
    where = len(name_tag) + 2
    _fail(text, f"invalid digest {_show(raw)} at character {where}", _DIGEST_HINT)


def _split_tag(text: str, name_tag: str) -> tuple[str, str | None]:
    """Split off the tag: what follows ':' in the last path component (a port's ':' is earlier)."""
    if "/" not in name_tag and (name_tag.startswith("[") or _looks_like_bare_host(name_tag)):
        _fail(
            text,
            f"{_show(name_tag)} names a registry but no repository",
            "add the repository after the host: HOST/PATH[:TAG]",
        )
    last = name_tag.rpartition("/")[2]
    colons = last.count(":")
    if colons == 0:
        return name_tag, None
    if colons > 1:
        _fail(
            text,
            f"':' appears {colons} times in {_show(last)}; one ':' separates the name and the tag",
            _TAG_HINT,
        )
    cut = len(name_tag) - len(last) + last.index(":")
    name, tag = name_tag[:cut], name_tag[cut + 1 :]
    rest = text[len(name_tag) :]
    if not tag:
        _fail(text, "':' at the end of the name with no tag after it", _TAG_HINT, name + rest)
    if len(tag) > MAX_TAG_LENGTH:
        _fail(
            text, f"the tag is {len(tag)} characters long; the limit is {MAX_TAG_LENGTH}", _TAG_HINT
        )
    if not _TAG.fullmatch(tag):
        bad = next(
            (i for i, char in enumerate(tag) if not _TAG.fullmatch(("a" if i else "") + char)),
            0,
        )
        _fail(
            text,
            f"the tag {_show(tag)} has {tag[bad]!r} at character {cut + 2 + bad}",
            _TAG_HINT,
        )
    return name, tag


def _looks_like_bare_host(name_tag: str) -> bool:
    """A lone "localhost:5000" or "ghcr.io": a registry without a repository, almost surely."""
    name, _, port = name_tag.partition(":")
    name = name.lower()
    if name == "localhost":
        return port.isascii() and port.isdigit()
    return not port and (name in WELL_KNOWN_HOSTS or name in _TYPOS)


def _parse_name(text: str, name: str, suffix: str) -> Repository:
    """HOST/PATH (suffix is the ':TAG@DIGEST' text after it, kept to rebuild suggestions)."""
    if not name:
        _fail(text, "no repository name", "write NAME:TAG or HOST/PATH:TAG")
    if name.startswith("/"):
        _fail(text, "the name starts with '/'", _NAME_HINT, name.lstrip("/") + suffix)
    if name.endswith("/"):
        _fail(text, "the name ends with '/'", _NAME_HINT, name.rstrip("/") + suffix)
    if "//" in name:
        _fail(
            text,
            f"empty path component ('//') at character {name.index('//') + 2}",
            _NAME_HINT,
            re.sub("/+", "/", name) + suffix,
        )
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first.lower() == "localhost"):
        registry = _parse_host(text, first, "/".join(components[1:]) + suffix)
        path, offset = components[1:], len(first) + 1
    else:
        registry, path, offset = DOCKER_HUB, components, 0

    _check_path(text, path, offset, prefix=name[:offset], suffix=suffix)
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]  # official images live under library/
    if registry == "r8.im" and len(path) == 1:
        _fail(
            text,
            "a Replicate reference needs a model name after the owner",
            f"write r8.im/{path[0]}/MODEL (Replicate references are r8.im/OWNER/MODEL)",
        )
    repository = Repository(registry, "/".join(path))
    full = str(repository)
    if len(full) > MAX_NAME_LENGTH:
        _fail(
            text,
            f"the repository name {_show(full)} is {len(full)} characters long; "
            f"the limit is {MAX_NAME_LENGTH}",
            "use a shorter repository path",
        )
    return repository


def _parse_host(text: str, raw: str, rest: str) -> str:
    """Validate and normalise the registry host; ``rest`` is everything after 'HOST/'."""
    host = raw.lower()  # host names are case-insensitive
    if host.endswith(":"):
        _fail(
            text, f"':' after the host {_show(raw)} with no port", _HOST_HINT, f"{raw[:-1]}/{rest}"
        )
    if host.count(":") > 1 and not host.startswith("[") and _ipv6(host) is not None:
        _fail(
            text,
            f"the IPv6 address {_show(raw)} must be in brackets",
            _HOST_HINT,
            f"[{raw}]/{rest}",
        )
    match = _HOST.fullmatch(host)
    if match is None:
        bad = next((char for char in host if not re.fullmatch(r"[a-z0-9.:\[\]-]", char)), None)
        detail = f"contains {bad!r}" if bad else "is not a valid host[:port]"
        _fail(text, f"the registry host {_show(raw)} {detail}", _HOST_HINT)
    domain, ipv6, port = match.group("domain"), match.group("ipv6"), match.group("port")
    if port is not None and not (len(port) <= 5 and 0 < int(port) < 65536):
        _fail(text, f"the port {port} of {_show(raw)} is not between 1 and 65535", _HOST_HINT)
    if ipv6 is not None:
        address = _ipv6(ipv6)
        if address is None:
            _fail(text, f"{_show(raw)} is not a valid IPv6 address", _HOST_HINT)
        host = f"[{address.compressed}]" + (f":{port}" if port is not None else "")
    elif domain in _TYPOS:
        meant = _TYPOS[domain]
        if domain in {"hub.docker.com", "www.docker.com"}:
            rest = re.sub(r"^(?:r|_)/(?=.)", "", rest)  # a Docker Hub web address: /r/ and /_/
        _fail(
            text,
            f"unknown registry {_show(raw)}; did you mean {meant} ({WELL_KNOWN_HOSTS[meant]})?",
            f"the {WELL_KNOWN_HOSTS[meant]} registry is {meant}",
            f"{meant}/{rest}",
        )
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _check_path(text: str, path: list[str], offset: int, prefix: str, suffix: str) -> None:
    """Every path component must match the grammar; uppercase gets a lowercase suggestion."""
    if all(_COMPONENT.fullmatch(part) for part in path):
        return
    joined = "/".join(path)
    lowered = joined.lower()
    if lowered != joined and all(_COMPONENT.fullmatch(part) for part in lowered.split("/")):
        position = (
            offset
            + 1
            + next(i for i, (a, b) in enumerate(zip(joined, lowered, strict=False)) if a != b)
        )
        _fail(
            text,
            f"the repository path {_show(joined)} has an uppercase letter at character {position}",
            "repository paths are lowercase",
            prefix + lowered + suffix,
        )
    for part in path:
        if not _COMPONENT.fullmatch(part):
            where = f"path component {_show(part)} at character {offset + 1}"
            _fail(text, f"the {where} {_explain_component(part)}", _NAME_HINT)
        offset += len(part) + 1


def _explain_component(part: str) -> str:
    bad = next((char for char in part if not re.fullmatch(r"[a-z0-9._-]", char)), None)
    if bad is not None:
        return f"contains the uppercase letter {bad!r}" if bad.isupper() else f"contains {bad!r}"
    if not part[0].isalnum():
        return f"starts with {part[0]!r}"
    if not part[-1].isalnum():
        return f"ends with {part[-1]!r}"
    runs = re.findall(r"[._-]+", part)
    wrong = next((run for run in runs if not re.fullmatch(r"\.|_|__|-+", run)), "")
    return f"has {wrong!r} between letters; separators are '.', '_', '__' or dashes"
