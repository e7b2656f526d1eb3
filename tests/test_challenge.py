"""WWW-Authenticate parsing: the shapes real registries send, and garbage, which must be a
ProtocolError and never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.registry.challenge import Challenge, parse_challenges
from skiff.registry.errors import ProtocolError


def test_docker_hub_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scope == "repository:library/ubuntu:pull"
    assert challenge.error is None


def test_basic_challenge() -> None:
    assert parse_challenges('Basic realm="registry"') == [Challenge("basic", {"realm": "registry"})]


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="r", Bearer realm="https://a/token",service="s", Negotiate'
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[0].realm == "r"
    assert challenges[1].params == {"realm": "https://a/token", "service": "s"}
    assert challenges[2].params == {}


def test_quoted_values_keep_commas_equals_and_escaped_quotes() -> None:
    header = (
        r'Bearer realm="https://a/token?x=1,y=2",service="say \"hi\"",'
        r'error="insufficient_scope",scope="repository:a:push,pull repository:b:pull"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.realm == "https://a/token?x=1,y=2"
    assert challenge.service == 'say "hi"'
    assert challenge.error == "insufficient_scope"
    assert challenge.scope == "repository:a:push,pull repository:b:pull"


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    [challenge] = parse_challenges('BEARER Realm="https://a/token", SERVICE="S"')
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://a/token"
    assert challenge.service == "S"  # values keep their case


def test_unquoted_token_values_and_loose_spacing() -> None:
    [challenge] = parse_challenges("Bearer  realm = skiff ,service=reg.v2 ,,")
    assert challenge.params == {"realm": "skiff", "service": "reg.v2"}


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        ",,,",
        'Bearer realm="unterminated',
        'Bearer realm="a" service="b"',  # no comma between parameters
        "=realm",
        '"quoted-scheme"',
        "Bearer realm=\x00",
        "Bearer realm=a;b",
    ],
)
def test_garbage_is_a_protocol_error(header: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_challenges(header)
    assert "WWW-Authenticate" in info.value.message


def test_protocol_error_quotes_a_bounded_part_of_the_header() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_challenges('Bearer realm="' + "x" * 10_000)
    assert len(info.value.message) < 400


_header_alphabet = st.sampled_from([*list('Bearer Basic realm="service,= \\\t;x:/'), "\x00", "é"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(_header_alphabet, max_size=80)))
def test_any_text_parses_or_raises_protocol_error(header: str) -> None:
    try:
        challenges = parse_challenges(header)
    except ProtocolError:
        return
    assert challenges
    for challenge in challenges:
        assert challenge.scheme == challenge.scheme.lower()
        assert all(key == key.lower() for key in challenge.params)
