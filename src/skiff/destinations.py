"""Where a push goes: a reference, a name from ``skiff.yaml``, or cog.yaml's own destination.

``skiff.yaml`` sits beside cog.yaml (which stays exactly Cog's) and names the destinations a
model is pushed to::

    destinations:
      prod: r8.im/acme/sdxl-turbo
      staging: ghcr.io/acme/sdxl-turbo:staging

A bare word on the command line (no ``/``, ``.`` or ``:``) is always one of these names, never
Docker Hub's ``library/NAME`` (which is for Docker's official images): ``skiff push prod``.
Without an argument, a push goes to cog.yaml's ``model:`` or ``image:`` (with Cog's
``COG_MODEL*`` overrides), else to the one destination skiff.yaml names.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from skiff import reference as refs
from skiff.errors import InvalidInput

FILENAME = "skiff.yaml"
# A name: a bare word, so that it can never be mistaken for a reference.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# Cog's default registry for a model: given only a repository (COG_MODEL_REPO).
REPLICATE_REGISTRY = "r8.im"
# Tags starting so are Cog's own (cog-image.*, cog-weight.*); Cog refuses them from users.
RESERVED_TAG_PREFIX = "cog-"
FORMAT_HINT = "skiff.yaml holds destinations: {NAME: REFERENCE, ...}, e.g. prod: r8.im/me/model"


@dataclass(frozen=True)
class Destination:
    name: str
    reference: str  # canonical, as reference.parse gives it
    line: int


@dataclass(frozen=True)
class Resolved:
    """Where a push goes, and how the user named it."""

    reference: str
    name: str | None = None  # the skiff.yaml name, if one was used
    source: str = "argument"  # what it came from, for the user: "skiff.yaml", "cog.yaml model:"

    def describe(self) -> str:
        """How to show it: ``prod (r8.im/acme/model)``, or the reference alone."""
        return f"{self.name} ({self.reference})" if self.name else self.reference


def is_name(text: str) -> bool:
    """True for a bare word: the name of a destination, never a reference."""
    return bool(text) and not any(c in text for c in "/.:@")


# -- skiff.yaml ---------------------------------------------------------------------------------


def load(folder: Path) -> dict[str, Destination]:
    """The destinations ``folder/skiff.yaml`` names (none without the file). Every mistake is
    an InvalidInput naming the line."""
    path = folder / FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise InvalidInput(f"{FILENAME}: not UTF-8 text", FORMAT_HINT) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions"
        ) from None
    return _parse(text)


def _fail(line: int | None, problem: str, hint: str | None = FORMAT_HINT) -> InvalidInput:
    where = f"{FILENAME} line {line}" if line else FILENAME
    return InvalidInput(f"{where}: {problem}", hint)


def _parse(text: str) -> dict[str, Destination]:
    import yaml  # only when there is a skiff.yaml to read

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable"
        raise _fail(mark.line + 1 if mark else None, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(None, f"invalid YAML: {str(exc).splitlines()[0]}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise _fail(root.start_mark.line + 1, "must be a mapping with destinations:")
    destinations: dict[str, Destination] = {}
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode) or key.value != "destinations":
            shown = key.value if isinstance(key, yaml.ScalarNode) else "a non-text key"
            raise _fail(line, f"unknown field {shown!r} (skiff.yaml has only destinations:)")
        if isinstance(value, yaml.ScalarNode) and value.value in ("", "~", "null"):
            continue  # `destinations:` with nothing under it yet
        if not isinstance(value, yaml.MappingNode):
            raise _fail(line, "destinations: must be a mapping of NAME: REFERENCE")
        for name_node, ref_node in value.value:
            destination = _destination(name_node, ref_node, destinations)
            destinations[destination.name] = destination
    return destinations


def _destination(
    name_node: object, ref_node: object, seen: Mapping[str, Destination]
) -> Destination:
    import yaml

    assert isinstance(name_node, yaml.Node) and isinstance(ref_node, yaml.Node)
    line = name_node.start_mark.line + 1
    if not isinstance(name_node, yaml.ScalarNode) or not _NAME.fullmatch(name_node.value):
        shown = repr(name_node.value) if isinstance(name_node, yaml.ScalarNode) else "this"
        raise _fail(
            line,
            f"{shown} cannot name a destination: a name is a bare word (letters, digits, "
            "'-' and '_'), never a reference",
            "e.g. prod: r8.im/me/model",
        )
    name = name_node.value
    if name in seen:
        raise _fail(line, f"destination {name!r} is named twice (first on line {seen[name].line})")
    if (
        not isinstance(ref_node, yaml.ScalarNode)
        or ref_node.tag != "tag:yaml.org,2002:str"
        or (not ref_node.value)
    ):
        raise _fail(
            ref_node.start_mark.line + 1,
            f"destination {name!r} must be a reference such as r8.im/me/model",
        )
    text = ref_node.value.strip()
    if is_name(text):
        raise _fail(
            ref_node.start_mark.line + 1,
            f"destination {name!r} is {text!r}, a bare word: write the registry and path",
            f"e.g. {name}: ghcr.io/me/{text} (Docker's official image would be "
            f"docker.io/library/{text})",
        )
    try:
        parsed = refs.parse(text)
    except refs.ReferenceError as exc:
        hint = f"did you mean {exc.suggestion}?" if exc.suggestion else exc.hint
        raise _fail(
            ref_node.start_mark.line + 1, f"destination {name!r}: {exc.message}", hint
        ) from None
    return Destination(name, str(parsed), line)


# -- resolution -----------------------------------------------------------------------------------


def resolve_name(text: str, folder: Path) -> Resolved:
    """A name from skiff.yaml; an unknown one is an InvalidInput with "did you mean"."""
    destinations = load(folder)
    found = destinations.get(text)
    if found is not None:
        return Resolved(found.reference, found.name, FILENAME)
    if not destinations:
        raise InvalidInput(
            f"no destination named {text!r}: {folder / FILENAME} names none",
            f"a bare word names a destination in {FILENAME} (destinations: {{{text}: "
            f"REGISTRY/PATH}}); a reference has a registry or a path, e.g. ghcr.io/me/{text}",
        )
    names = sorted(destinations)
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]} ({destinations[close[0]].reference})?"
    else:
        hint = f"the destinations in {FILENAME}: {', '.join(names)}"
    raise InvalidInput(f"no destination named {text!r} in {folder / FILENAME}", hint)


def resolve(text: str | None, folder: Path, cog: CogDestination | None = None) -> Resolved:
    """Where ``skiff push [TEXT]`` goes. ``cog``: cog.yaml's ``image:``/``model:`` (read by the
    caller, which has loaded cog.yaml); needed only without TEXT."""
    if text is not None:
        return resolve_name(text, folder) if is_name(text) else Resolved(text)
    if cog is not None:
        own = cog.resolve()
        if own is not None:
            return own
    destinations = load(folder)
    if len(destinations) == 1:
        [only] = destinations.values()
        return Resolved(only.reference, only.name, FILENAME)
    if destinations:
        raise InvalidInput(
            f"no destination: {FILENAME} names several ({', '.join(sorted(destinations))})",
            "give one: skiff push NAME",
        )
    raise InvalidInput(
        "no destination: give one (skiff push REGISTRY/NAME, or a name from skiff.yaml), "
        "or set model: in cog.yaml"
    )


@dataclass(frozen=True)
class CogDestination:
    """cog.yaml's ``image:`` and ``model:``, resolved as Cog 0.23 does with its overrides:
    ``COG_MODEL`` (a whole reference) wins; else ``COG_MODEL_REGISTRY``, ``COG_MODEL_REPO``
    and ``COG_MODEL_TAG`` replace a part of ``model:``. A model without a tag gets a timestamp
    tag (UTC, ``20260508T153042Z``). A model reference beside ``image:`` is refused."""

    image: str | None = None
    model: str | None = None

    def resolve(self, env: Mapping[str, str] | None = None) -> Resolved | None:
        env = os.environ if env is None else env
        model = self._model(env)
        if model is not None:
            if self.image:
                raise InvalidInput(
                    "image: in cog.yaml cannot be combined with COG_MODEL* variables",
                    "remove image: from cog.yaml (use model: instead), or unset COG_MODEL, "
                    "COG_MODEL_REGISTRY, COG_MODEL_REPO and COG_MODEL_TAG",
                )
            return model
        if self.image:
            return Resolved(self.image, source="cog.yaml image:")
        return None

    def _model(self, env: Mapping[str, str]) -> Resolved | None:
        full = env.get("COG_MODEL", "")
        if full:
            parsed = _parse_env("COG_MODEL", full)
            if parsed.tag is None and parsed.digest is None:
                parsed = parsed.with_tag(timestamp_tag())
            return Resolved(str(parsed), source="COG_MODEL")
        registry = env.get("COG_MODEL_REGISTRY", "")
        repo = env.get("COG_MODEL_REPO", "")
        tag = env.get("COG_MODEL_TAG", "")
        if registry and any(c in registry for c in "/@"):
            raise InvalidInput(
                f"invalid COG_MODEL_REGISTRY {registry!r}: must be a bare host "
                "(no path, tag or digest)"
            )
        if repo and any(c in repo for c in ":@"):
            raise InvalidInput(
                f"invalid COG_MODEL_REPO {repo!r}: must be a bare repository path "
                "(no host, tag or digest)"
            )
        if tag and tag.startswith(RESERVED_TAG_PREFIX):
            raise InvalidInput(
                f"invalid COG_MODEL_TAG {tag!r}: tags starting with {RESERVED_TAG_PREFIX!r} "
                "are reserved for Cog's own",
                "choose another tag",
            )
        if tag and not _TAG.fullmatch(tag):
            raise InvalidInput(
                f"invalid COG_MODEL_TAG {tag!r}: a tag is up to 128 letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'"
            )
        base_registry = base_path = ""
        if self.model:
            base = refs.parse(self.model).repository  # cog.yaml's check has parsed it already
            base_registry, base_path = base.registry, base.path
        path = repo or base_path
        if not path:
            return None
        host = registry or base_registry or REPLICATE_REGISTRY
        parsed = _parse_env(
            "COG_MODEL_REGISTRY/COG_MODEL_REPO", f"{host}/{path}:{tag or timestamp_tag()}"
        )
        overridden = [
            n
            for n, v in (
                ("COG_MODEL_REGISTRY", registry),
                ("COG_MODEL_REPO", repo),
                ("COG_MODEL_TAG", tag),
            )
            if v
        ]
        source = "cog.yaml model:" + (f" with {', '.join(overridden)}" if overridden else "")
        if not self.model:
            source = ", ".join(overridden)
        return Resolved(str(parsed), source=source)


def _parse_env(variable: str, text: str) -> refs.Reference:
    try:
        return refs.parse(text)
    except refs.ReferenceError as exc:
        hint = f"did you mean {exc.suggestion}?" if exc.suggestion else exc.hint
        raise InvalidInput(f"invalid {variable}: {exc.message}", hint) from None


def timestamp_tag() -> str:
    """Cog's tag for a model pushed without one: the UTC time, ISO 8601 basic form."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
