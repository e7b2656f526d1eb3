"""The built-in checks, cheapest first (DESIGN §3): syntax, cog.yaml, reachability,
credentials, token scope, the write probe, the tag."""

from __future__ import annotations

from dataclasses import dataclass

from skiff import reference as refs
from skiff.errors import SkiffError
from skiff.preflight.check import Check, CheckFailed, CheckSkipped, Context, Severity
from skiff.registry.errors import (
    Denied,
    NotFound,
    RegistryError,
    TokenRejected,
    Unauthorized,
)

PUSH_ACTIONS = ("push", "pull")


def login_hint(registry: str) -> str:
    return f"log in first: skiff login {registry} -u USERNAME --password-stdin"


def _not_allowed(context: Context, detail: str) -> CheckFailed:
    """The account may not push there: name the account, the repository and what is missing."""
    assert context.reference is not None
    who = _who(context)
    return CheckFailed(
        f"{who} may not push to {context.reference.repository} {detail}",
        f"push to a repository {who} owns, or ask its owner for write access",
    )


def _who(context: Context) -> str:
    creds = context.credentials
    if creds is None or creds.anonymous:
        return "anonymous"
    return repr(creds.username) if creds.username else "the stored credentials"


@dataclass
class ReferenceSyntax:
    name: str = "reference"

    def run(self, context: Context) -> str:
        try:
            context.reference = refs.parse(context.text)
        except refs.ReferenceError as exc:
            hint = exc.hint
            suggestion = _known_instead(exc.suggestion)
            if suggestion:
                hint = f"did you mean {suggestion}?" + (f" ({hint})" if hint else "")
                context.facts["suggestion"] = suggestion.split(" (", 1)[0]
            raise CheckFailed(exc.message, hint, Severity.INPUT) from None
        return f"{context.reference}"


def _known_instead(suggestion: str | None) -> str | None:
    """The corrected reference, or the known destination it is a typo of: ``acme/sdxI`` is
    lowercased to ``acme/sdxi``, but ``acme/sdxl``, pushed to before, is what was meant."""
    if suggestion is None:
        return None
    from skiff import known

    try:
        fixed = refs.parse(suggestion)
    except refs.ReferenceError:
        return suggestion
    close = known.near(fixed.repository)
    if close is None:
        return suggestion
    tag = f":{fixed.tag}" if fixed.tag else ""
    return f"{close.repository}{tag} ({close.describe()})"


@dataclass
class LocalModel:
    """cog.yaml is valid and names files that exist (only when a model folder is given)."""

    name: str = "cog.yaml"

    def run(self, context: Context) -> str:
        if context.model_dir is None or not (context.model_dir / "cog.yaml").is_file():
            raise CheckSkipped("no cog.yaml here")
        from skiff import config  # imported only when there is a cog.yaml to read

        try:
            loaded = config.load(context.model_dir)
            config.check_local(loaded)
        except SkiffError as exc:
            raise CheckFailed(exc.message, exc.hint, Severity.INPUT) from None
        context.facts["config"] = loaded
        predictor = loaded.predict or "no predictor"
        return f"valid, predictor {predictor}"


@dataclass
class Reachable:
    name: str = "registry"

    def run(self, context: Context) -> str:
        # Imported here, not with preflight: by now the host's CA store is loading in the
        # background, and these imports (httpx above all) overlap with it.
        from skiff.auth import dockerconfig
        from skiff.registry.client import RegistryClient

        ref = context.require_reference()
        if context.credentials is None:
            try:
                context.credentials = dockerconfig.resolve(ref.repository.registry)
            except SkiffError as exc:
                # A broken config file or helper is reported by the credentials check.
                context.facts["credentials_error"] = exc
                from skiff.auth.credentials import ANONYMOUS

                context.credentials = ANONYMOUS
        client = RegistryClient(
            ref.repository, context.credentials, actions=PUSH_ACTIONS, options=context.options
        )
        context.client = client
        try:
            ping = client.ping()
        except RegistryError as exc:
            raise CheckFailed(exc.message, exc.hint) from None
        context.ping = ping
        if not ping.challenges:
            auth = "no authentication"
        else:
            first = ping.challenges[0]
            auth = "token authentication" if first.scheme == "bearer" else "password authentication"
        scheme = ping.base_url.split(":", 1)[0].upper()
        return f"{client.host} answers over {scheme}, {auth}"


@dataclass
class CredentialsAccepted:
    name: str = "credentials"

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        client = context.require_client()
        error = context.facts.get("credentials_error")
        if isinstance(error, SkiffError):
            raise CheckFailed(error.message, error.hint)
        creds = context.credentials
        assert creds is not None and context.ping is not None
        registry = ref.repository.registry
        if not context.ping.challenges:
            return f"{registry} needs none"
        if creds.anonymous:
            raise CheckFailed(
                f"no credentials for {registry} (it requires a login to push)", login_hint(registry)
            )
        try:
            # With tokens this fetches the push token now, so that a wrong password is told
            # apart from a denied push.
            response = client.send("GET", f"{client.base_url}/v2/", what="logging in")
        except TokenRejected:
            response = None
        except RegistryError as exc:
            raise CheckFailed(exc.message, exc.hint) from None
        if response is None or response.status_code == 401:
            raise CheckFailed(
                f"{registry} rejected the credentials of {_who(context)} ({creds.source})",
                f"the password or token is wrong or expired; {login_hint(registry)}",
            )
        return f"{_who(context)} accepted ({creds.source})"


@dataclass
class TokenScope:
    """Where the token is a JWT, its ``access`` claim says what was granted: no push, no point."""

    name: str = "token scope"

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        client = context.require_client()
        if client.auth.scheme != "bearer":
            raise CheckSkipped("registry does not use tokens")
        token = client.auth.token_for()
        if token is None or token.access is None:
            raise CheckSkipped("token is opaque; the write probe decides")
        granted = token.access.get(ref.repository.path, frozenset())
        if "push" not in granted:
            have = ", ".join(sorted(granted)) or "nothing"
            raise _not_allowed(context, f": the registry grants only {have} (missing: push)")
        return f"token grants {', '.join(sorted(granted))} on {ref.repository.path}"


@dataclass
class WriteProbe:
    """The dry push: open an upload session, then cancel it. Nothing is written."""

    name: str = "write access"

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        client = context.require_client()
        try:
            session = client.start_upload()
        except Denied as exc:
            raise _not_allowed(context, f"(missing: push permission; {exc.message})") from None
        except Unauthorized as exc:
            if context.credentials is None or context.credentials.anonymous:
                raise CheckFailed(
                    f"{ref.repository.registry} requires a login to push ({exc.message})",
                    login_hint(ref.repository.registry),
                ) from None
            raise _not_allowed(context, f"(missing: push permission; {exc.message})") from None
        except NotFound as exc:
            raise CheckFailed(
                f"repository {ref.repository} does not exist ({exc.message})",
                "create the repository in the registry first",
            ) from None
        except RegistryError as exc:
            raise CheckFailed(exc.message, exc.hint) from None
        assert session is not None
        context.facts["probe_cancelled"] = client.cancel_upload(
            session, scopes=(ref.repository.scope("delete"),)
        )
        return "upload session opened and cancelled: push allowed"


@dataclass
class TagState:
    name: str = "tag"

    def run(self, context: Context) -> str:
        ref = context.require_reference()
        client = context.require_client()
        try:
            found = client.head_manifest(ref.identifier)
        except RegistryError as exc:
            raise CheckFailed(exc.message, exc.hint) from None
        context.facts["tag_exists"] = found is not None
        if found is None:
            return f"{ref.identifier} is new"
        context.facts["repository_exists"] = True
        digest = f" ({found.digest})" if found.digest else ""
        return f"{ref.identifier} exists{digest} and will be replaced"


@dataclass
class KnownDestination:
    """A repository that does not exist yet, a typo away from one skiff has pushed to, is
    probably that one misspelt: registries that create repositories on push would create the
    wrong one after a long upload. ``--new`` says a new repository is meant."""

    name: str = "typo"

    def run(self, context: Context) -> str:
        from skiff import known

        ref = context.require_reference()
        if context.facts.get("repository_exists") is True:
            raise CheckSkipped("the repository exists")
        if context.intent.new_repository:
            return f"{ref.repository} may be a new repository (--new)"
        close = known.near(ref.repository)
        if close is None:
            return f"{ref.repository} is not close to any repository pushed to before"
        # Only now, near a known one, is the registry asked whether the repository is new: the
        # usual push pays nothing for this check.
        client = context.require_client()
        try:
            exists = client.has_tags()
        except RegistryError:
            raise CheckSkipped("the registry did not say whether the repository exists") from None
        if exists:
            return f"{ref.repository} exists, near {close.repository}"
        suggestion = close.repository + (f":{ref.tag}" if ref.tag else "")
        context.facts["suggestion"] = suggestion
        raise CheckFailed(
            f"repository {ref.repository} does not exist yet; did you mean {close.repository} "
            f"({close.describe()})?",
            f"push to {suggestion}; or, if a new repository is meant, add --new",
        )


def destination_checks() -> list[Check]:
    """What the registry will say, in the order each needs the one before."""
    return [
        ReferenceSyntax(),
        Reachable(),
        CredentialsAccepted(),
        TokenScope(),
        WriteProbe(),
        TagState(),
        KnownDestination(),
    ]


def model_checks() -> list[Check]:
    """The model folder's own checks. They run after the destination's (and its platform's):
    validating cog.yaml means importing its schema (pydantic), which costs more than the
    registry's answers to a healthy registry, and a rejected destination must be told at once.
    Either failure stops the push before any build work, so the user learns the same."""
    return [LocalModel()]


def builtin_checks() -> list[Check]:
    return [*destination_checks(), *model_checks()]
