"""Image reference grammar: normalisation, errors with suggestions, and round-trip properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from skiff.digest import Digest
from skiff.errors import InvalidInput
from skiff.reference import (
    WELL_KNOWN_HOSTS,
    Reference,
    ReferenceError,
    Repository,
    is_loopback_host,
    parse,
)

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"

# --- valid references and what they normalise to ---------------------------------------------

VALID = [
    ("ubuntu", "docker.io/library/ubuntu"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("alice/model", "docker.io/alice/model"),
    ("docker.io/ubuntu", "docker.io/library/ubuntu"),
    ("index.docker.io/ubuntu", "docker.io/library/ubuntu"),
    ("registry-1.docker.io/alice/model:v1", "docker.io/alice/model:v1"),
    ("INDEX.Docker.IO/alice/model", "docker.io/alice/model"),
    ("ghcr.io/alice/model", "ghcr.io/alice/model"),
    ("GHCR.IO/alice/model:V1", "ghcr.io/alice/model:V1"),
    ("r8.im/alice/model", "r8.im/alice/model"),
    ("localhost/model", "localhost/model"),
    ("LocalHost:5000/a/b/c", "localhost:5000/a/b/c"),
    ("127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x", "[::1]:5000/x"),
    ("[0:0:0:0:0:0:0:1]/x", "[::1]/x"),
    ("[FE80::1]:443/x", "[fe80::1]:443/x"),
    ("example.com/a.b_c__d---e/f-g", "example.com/a.b_c__d---e/f-g"),
    ("alice/model:_x.Y-9", "docker.io/alice/model:_x.Y-9"),
    (f"alice/model@{DIGEST}", f"docker.io/alice/model@{DIGEST}"),
    (f"ghcr.io/a/b:v1@{DIGEST}", f"ghcr.io/a/b:v1@{DIGEST}"),
    ("a:" + "t" * 128, "docker.io/library/a:" + "t" * 128),
    ("localhost:5000/" + "a" * 240, "localhost:5000/" + "a" * 240),  # exactly 255
]


@pytest.mark.parametrize(("text", "canonical"), VALID)
def test_valid_references_normalise(text: str, canonical: str) -> None:
    reference = parse(text)
    assert str(reference) == canonical
    assert parse(canonical) == reference


def test_parts_of_a_reference() -> None:
    reference = parse(f"LOCALHOST:5000/alice/model:v1@{DIGEST}")
    assert reference == Reference(
        Repository("localhost:5000", "alice/model"), "v1", Digest.parse(DIGEST)
    )
    assert reference.identifier == DIGEST
    assert reference.repository.scope("push", "pull") == "repository:alice/model:push,pull"
    untagged = parse("ubuntu")
    assert untagged.tag is None
    assert untagged.digest is None
    assert untagged.identifier == "latest"
    assert untagged.repository.api_host == "registry-1.docker.io"
    assert parse("ghcr.io/a/b").repository.api_host == "ghcr.io"
    assert str(untagged.with_tag("v2")) == "docker.io/library/ubuntu:v2"


# --- errors: the message says what and where, the suggestion is the fix --------------------

ERRORS = [
    # (text, words the message must contain, suggestion)
    ("", "empty", None),
    ("   ", "whitespace", None),
    (" ghcr.io/a/b", "whitespace", "ghcr.io/a/b"),
    ("ghcr.io/a/b\n", "whitespace", "ghcr.io/a/b"),
    ("ghcr.io/ alice/model", "whitespace at character 9", "ghcr.io/alice/model"),
    ("ghcr.io/alice/model : v1", "whitespace", "ghcr.io/alice/model:v1"),
    ("my model", "whitespace at character 3", "my-model"),
    ("Ubuntu", "uppercase letter at character 1", "ubuntu"),
    ("ghcr.io/Alice/Model:V1", "uppercase letter at character 9", "ghcr.io/alice/model:V1"),
    ("https://ghcr.io/alice/model", "'https://' is a URL scheme", "ghcr.io/alice/model"),
    ("http://localhost:5000/x", "'http://'", "localhost:5000/x"),
    ("docker://alice/model:v1", "'docker://'", "alice/model:v1"),
    ("https://GHCR.io/Alice/Model/", "URL scheme", "GHCR.io/alice/model"),
    ("ghcr.io/alice/model/", "ends with '/'", "ghcr.io/alice/model"),
    ("ghcr.io/alice/model/:v1", "ends with '/'", "ghcr.io/alice/model:v1"),
    ("/alice/model", "starts with '/'", "alice/model"),
    ("ghcr.io/alice//model", "empty path component ('//') at character 15", "ghcr.io/alice/model"),
    ("a" * 300, "the limit is 255", None),
    ("localhost:5000/" + "a" * 241, "256 characters long", None),
    ("alice/model:v1+cu118", "'+' at character 15", None),
    ("alice/model:.v1", "'.' at character 13", None),
    ("alice/model:" + "t" * 129, "129 characters long; the limit is 128", None),
    ("alice/model:", "no tag after it", "alice/model"),
    ("alice/model:v1:v2", "':' appears 2 times", None),
    ("alice/model@", "no digest after it", "alice/model"),
    ("alice/model@v1", "looks like a tag", "alice/model:v1"),
    (f"alice/model@{HEX}", "no 'sha256:' prefix", f"alice/model@{DIGEST}"),
    (f"alice/model@{DIGEST.upper()}", "lowercase", f"alice/model@{DIGEST}"),
    ("alice/model@sha256:abc", "invalid digest", None),
    ("alice/model@sha512:abc", "unsupported digest algorithm 'sha512'", None),
    (f"alice/model@{DIGEST}@{DIGEST}", "more than once", None),
    (f"@{DIGEST}", "no repository name", None),
    (":v1", "no repository name", None),
    (HEX, "image ID", None),
    (DIGEST, "a digest alone", None),
    ("r8.im/alice", "needs a model name", None),
    ("r8.in/alice/model", "did you mean r8.im", "r8.im/alice/model"),
    ("r8.io/alice/model", "did you mean r8.im", "r8.im/alice/model"),
    ("ghcr.com/alice/model", "did you mean ghcr.io", "ghcr.io/alice/model"),
    ("ghcr.oi/alice/model", "did you mean ghcr.io", "ghcr.io/alice/model"),
    ("ghrc.io/alice/model", "did you mean ghcr.io", "ghcr.io/alice/model"),
    ("gcr.oi/project/model", "did you mean gcr.io", "gcr.io/project/model"),
    ("quay.com/alice/model", "did you mean quay.io", "quay.io/alice/model"),
    ("docker.com/alice/model", "did you mean docker.io", "docker.io/alice/model"),
    ("dockerhub.com/alice/model", "did you mean docker.io", "docker.io/alice/model"),
    ("hub.docker.com/r/alice/model", "did you mean docker.io", "docker.io/alice/model"),
    ("https://hub.docker.com/_/ubuntu", "URL scheme", "docker.io/ubuntu"),
    ("replicate.com/alice/model", "did you mean r8.im", "r8.im/alice/model"),
    ("R8.IN/Alice/Model", "did you mean r8.im", "r8.im/alice/model"),
    ("ghcr.io", "names a registry but no repository", None),
    ("localhost:5000", "names a registry but no repository", None),
    ("[::1]:5000", "names a registry but no repository", None),
    ("::1/x", "must be in brackets", "[::1]/x"),
    ("[::g]/x", "registry host", None),
    ("[1:2:3]/x", "not a valid IPv6 address", None),
    ("localhost:99999/x", "not between 1 and 65535", None),
    ("localhost:/x", "no port", "localhost/x"),
    ("my_registry.com/x", "contains '_'", None),
    ("-bad.com/x", "registry host", None),
    ("alice/-model", "starts with '-'", None),
    ("alice/model_", "ends with '_'", None),
    ("alice/a..b", "'..' between letters", None),
    ("alice/a___b", "'___' between letters", None),
    ("alice/mod!el", "contains '!'", None),
    ("Alice_/x", "uppercase letter 'A'", None),
]


@pytest.mark.parametrize(("text", "words", "suggestion"), ERRORS)
def test_errors_explain_and_suggest(text: str, words: str, suggestion: str | None) -> None:
    with pytest.raises(ReferenceError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert words in error.message
    assert error.hint
    assert error.suggestion == suggestion
    if suggestion is not None:
        parse(suggestion)


def test_long_input_is_shortened_in_the_message() -> None:
    with pytest.raises(ReferenceError) as caught:
        parse("a" * 5000 + "/")
    assert len(caught.value.message) < 300


def test_well_known_hosts_parse_and_are_not_typos() -> None:
    for host in WELL_KNOWN_HOSTS:
        assert parse(f"{host}/alice/model").repository.registry == host


# --- loopback hosts (plain HTTP without asking) ----------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:5000",
        "127.0.0.1",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:5000",
        "::1",
        "[::ffff:127.0.0.1]",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "10.0.0.1",
        "128.0.0.1:5000",
        "ghcr.io",
        "localhost.example.com",
        "[::2]:5000",
        "localhost:abc",
        "[::1",
        "[::1]x",
        "127.0.0.1.nip.io",
    ],
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_parsed_loopback_registries() -> None:
    assert is_loopback_host(parse("[0::1]:5000/a").repository.registry)
    assert not is_loopback_host(parse("ghcr.io/a/b").repository.registry)


# --- properties -------------------------------------------------------------------------------

_ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


def _component(separators: list[str]) -> st.SearchStrategy[str]:
    """A path component from the grammar: alphanumeric runs joined by the given separators."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        runs = draw(st.lists(_ALNUM, min_size=1, max_size=4))
        return runs[0] + "".join(draw(st.sampled_from(separators)) + run for run in runs[1:])

    return build()


_SEPARATORS = [".", "_", "__", "-", "--", "---"]
_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,4}[a-z0-9])?", fullmatch=True)
_HOSTS = st.one_of(
    st.none(),  # Docker Hub, implied
    st.sampled_from([*WELL_KNOWN_HOSTS, "localhost", "index.docker.io", "[::1]"]),
    st.builds(lambda a, b: f"reg-{a}.{b}.test", _LABEL, _LABEL),
    st.builds(lambda a: f"{a}.example", _LABEL).map(str.upper),
    st.integers(1, 65535).map(lambda port: f"localhost:{port}"),
    st.integers(1, 65535).map(lambda port: f"[fe80::1]:{port}"),
    st.integers(0, 255).map(lambda n: f"127.0.0.{n}:5000"),
)
_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
_DIGESTS = st.binary(max_size=8).map(Digest.of)


@st.composite
def grammar_references(draw: st.DrawFn) -> tuple[str, str | None, Digest | None]:
    """A reference text from the grammar, with the tag and digest it was built with."""
    host = draw(_HOSTS)
    # Without a host, a '.' in the first component would make it a host: Docker's rule.
    first = draw(_component(_SEPARATORS if host else ["_", "__", "-"]))
    rest = draw(st.lists(_component(_SEPARATORS), min_size=1 if host == "r8.im" else 0, max_size=3))
    path = "/".join([first, *rest])
    # Refused on purpose: a bare "localhost:PORT" (host only) and "sha256:HEX" (digest only).
    assume(host or path not in ("localhost", "sha256"))
    tag = draw(st.none() | _TAGS)
    digest = draw(st.none() | _DIGESTS)
    text = f"{host}/{path}" if host else path
    text += f":{tag}" if tag is not None else ""
    text += f"@{digest}" if digest is not None else ""
    return text, tag, digest


@given(grammar_references())
@example((f"localhost:5000/a@{DIGEST}", None, Digest.parse(DIGEST)))
def test_grammar_references_round_trip(case: tuple[str, str | None, Digest | None]) -> None:
    text, tag, digest = case
    reference = parse(text)
    assert (reference.tag, reference.digest) == (tag, digest)
    canonical = str(reference)
    assert parse(canonical) == reference
    assert str(parse(canonical)) == canonical


_REFERENCE_ALPHABET = "aZ09:/@._-+ \t[]sh256!ÄK"


def _check_outcome(text: str) -> None:
    """Parse gives a Reference or a ReferenceError whose suggestion itself parses."""
    try:
        reference = parse(text)
    except ReferenceError as error:
        assert error.hint
        assert "Traceback" not in error.message
        assert "\n" not in error.message
        if error.suggestion is not None:
            assert parse(error.suggestion) is not None
    else:
        assert isinstance(reference, Reference)
        assert parse(str(reference)) == reference


@given(st.text())
@settings(max_examples=300)
def test_any_text_parses_or_raises_reference_error(text: str) -> None:
    _check_outcome(text)


@given(st.text(_REFERENCE_ALPHABET, max_size=40))
@settings(max_examples=500)
@example("https://GHCR.io/A//b/ :v1@")
def test_reference_like_text_parses_or_raises_reference_error(text: str) -> None:
    _check_outcome(text)


_MISTAKES: dict[str, Callable[[str], str]] = {
    "scheme": lambda text: "https://" + text,
    "spaces": lambda text: f"  {text} ",
    "uppercase": lambda text: text.upper(),
}


@given(grammar_references(), st.sampled_from(sorted(_MISTAKES)))
def test_a_common_mistake_is_normalised_or_gets_a_suggestion_meaning_the_same(
    case: tuple[str, str | None, Digest | None], mistake: str
) -> None:
    text, tag, digest = case
    assume(mistake != "uppercase" or (tag is None and digest is None))  # tags are case-sensitive
    wrong = _MISTAKES[mistake](text)
    try:
        reference = parse(wrong)  # an uppercase host is only normalised
    except ReferenceError as error:
        assert error.suggestion is not None
        reference = parse(error.suggestion)
    assert reference == parse(text)


@given(grammar_references())
def test_trailing_slash_and_double_slash_are_fixed(
    case: tuple[str, str | None, Digest | None],
) -> None:
    text, _, _ = case
    name_end = len(text)
    for mark in ("@", ":"):
        position = text.rfind(mark)
        if position > text.rfind("/"):
            name_end = min(name_end, position)
    for wrong in (text[:name_end] + "/" + text[name_end:], text.replace("/", "//", 1)):
        if wrong == text:
            continue
        with pytest.raises(ReferenceError) as caught:
            parse(wrong)
        assert caught.value.suggestion is not None
        assert parse(caught.value.suggestion) == parse(text)
