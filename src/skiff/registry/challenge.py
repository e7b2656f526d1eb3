"""Parsing of ``WWW-Authenticate`` challenges (RFC 7235), as registries send them.

A registry answers ``401`` with one or more challenges, e.g.
``Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"``.
Several challenges may share one header, separated by commas, so the parser has to tell a new
scheme from the next parameter of the current one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from skiff.registry.errors import ProtocolError

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = re.compile(r"[ \t]*")
_MISCONFIGURED = "the registry or a proxy in front of it is misconfigured"


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge: a scheme (lowercased) and its parameters (keys lowercased)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(header: str, host: str = "the registry") -> list[Challenge]:
    """Parse a WWW-Authenticate header value into its challenges, in order.

    Raises ProtocolError on text that is not a challenge list, so a garbled header is reported
    as the fault of ``host`` (named in the message) instead of surfacing as a crash.
    """
    parser = _Parser(header, host)
    challenges = parser.challenges()
    if not challenges:
        raise ProtocolError(
            f"{host} sent an empty WWW-Authenticate header: {header[:200]!r}", _MISCONFIGURED
        )
    return challenges


class _Parser:
    def __init__(self, text: str, host: str) -> None:
        self.text = text
        self.host = host
        self.pos = 0

    def _skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()

    def _at_end(self) -> bool:
        self._skip_space()
        return self.pos >= len(self.text)

    def _fail(self, what: str) -> ProtocolError:
        return ProtocolError(
            f"{self.host} sent a malformed WWW-Authenticate header ({what} at character "
            f"{self.pos + 1}): {self.text[:200]!r}",
            _MISCONFIGURED,
        )

    def _token(self) -> str | None:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group(0)

    def _quoted(self) -> str:
        assert self.text[self.pos] == '"'
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self._fail("unterminated quoted string")

    def _skip_commas(self) -> None:
        while not self._at_end() and self.text[self.pos] == ",":
            self.pos += 1

    def challenges(self) -> list[Challenge]:
        result: list[Challenge] = []
        self._skip_commas()
        while not self._at_end():
            scheme = self._token()
            if scheme is None:
                raise self._fail("expected an authentication scheme")
            params = self._params()
            result.append(Challenge(scheme.lower(), params))
            self._skip_commas()
        return result

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        while not self._at_end():
            mark = self.pos
            key = self._token()
            if key is None:
                raise self._fail("expected a parameter name")
            self._skip_space()
            if self.pos >= len(self.text) or self.text[self.pos] != "=":
                # Not a parameter: it is the next challenge's scheme.
                self.pos = mark
                return params
            self.pos += 1
            self._skip_space()
            if self.pos < len(self.text) and self.text[self.pos] == '"':
                value = self._quoted()
            else:
                value = self._token() or ""
            params[key.lower()] = value
            self._skip_space()
            if self.pos < len(self.text):
                if self.text[self.pos] != ",":
                    raise self._fail("expected ',' between parameters")
                self._skip_commas()
        return params
