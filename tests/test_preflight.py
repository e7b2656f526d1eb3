"""Preflight in-process against real registries: a rejected push is rejected fast, with a message
that names the repository, the account and what is missing, and leaves nothing behind."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.preflight import (
    CheckFailed,
    CheckResult,
    Context,
    Report,
    Severity,
    Status,
    run_preflight,
)
from skiff.reference import Reference
from skiff.registry.transport import TransportOptions
from support import USERS, DockerConfig, RegistryServer, push_tiny_image
from support.misbehaving import MisbehavingServer, Reply, Route

FAST = TransportOptions(backoff=0.01, connect_timeout=1.0, read_timeout=5.0)


def preflight(text: str, **kwargs: object) -> Report:
    kwargs.setdefault("options", FAST)
    return run_preflight(text, **kwargs)  # type: ignore[arg-type]


def statuses(report: Report) -> dict[str, Status]:
    return {r.name: r.status for r in report.results}


def assert_passed(report: Report) -> None:
    """Every check ok, or skipped because it does not apply (never because something failed)."""
    assert report.ok, report.to_json()
    for result in report.results:
        assert result.status in (Status.OK, Status.SKIPPED), result
        if result.status is Status.SKIPPED:
            assert "earlier check failed" not in result.message
    assert statuses(report)["write access"] is Status.OK


# -- the acceptance criterion: a push that will be rejected is rejected in under a second --------


def test_alice_cannot_push_to_bobs_repository(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    report = preflight(f"{token_registry.host}/bob/model")
    assert not report.ok
    assert report.elapsed_ms < 1000
    failure = report.failure
    assert failure is not None
    assert failure.severity is Severity.DESTINATION
    assert "bob/model" in failure.message
    assert "alice" in failure.message
    assert "push" in failure.message
    assert failure.hint
    # Nothing was created: no repository, no blob, no upload session.
    assert token_registry.repositories() == []
    assert token_registry.blobs() == []
    assert token_registry.uploads("bob/model") == []
    # The checks after the failure did not run.
    assert statuses(report)["tag"] is Status.SKIPPED


def test_denied_upload_without_a_jwt_claim_is_reported_by_the_write_probe(
    docker_config: DockerConfig,
) -> None:
    """An opaque token (GHCR) proves nothing: the write probe's 403 DENIED decides."""
    body = '{"errors": [{"code": "DENIED", "message": "permission_denied: write_package"}]}'
    challenge = Reply(401, "", {"WWW-Authenticate": 'Bearer realm="{base}/token"'})
    routes: dict[str, Route] = {
        "GET /v2/": lambda seen: Reply(200, "{}") if seen.authorized else challenge,
        "GET /token": Reply(200, '{"token": "opaque-token-value-7f3a"}'),
        "POST /v2/bob/model/blobs/uploads/": Reply(403, body),
    }
    with MisbehavingServer(routes) as server:
        docker_config.write_auth(server.host, "alice", USERS["alice"])
        report = preflight(f"{server.host}/bob/model")
    failure = report.failure
    assert failure is not None and failure.name == "write access"
    assert statuses(report)["token scope"] is Status.SKIPPED
    assert "'alice' may not push to" in failure.message
    assert "bob/model" in failure.message
    assert "permission_denied: write_package" in failure.message
    assert "opaque-token-value-7f3a" not in repr(report.to_json())


def test_missing_repository_is_reported(docker_config: DockerConfig) -> None:
    routes = {
        "GET /v2/": Reply(200, "{}"),
        "POST /v2/team/model/blobs/uploads/": Reply(
            404, '{"errors": [{"code": "NAME_UNKNOWN", "message": "repository not found"}]}'
        ),
    }
    with MisbehavingServer(routes) as server:
        report = preflight(f"{server.host}/team/model")
    failure = report.failure
    assert failure is not None
    assert "team/model does not exist" in failure.message
    assert failure.hint is not None and "create the repository" in failure.hint


# -- allowed destinations -----------------------------------------------------------------------


def test_allowed_on_token_registry(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    report = preflight(f"{token_registry.host}/alice/model:v1")
    assert_passed(report)
    assert statuses(report)["token scope"] is Status.OK
    assert report.tag_exists is False
    assert report.reference == f"{token_registry.host}/alice/model:v1"
    # The probe's upload session was cancelled, and nothing else was written.
    assert token_registry.open_uploads("alice/model") == []
    assert token_registry.blobs() == []
    assert token_registry.manifests("alice/model") == []


def test_allowed_on_plain_registry(plain_registry: RegistryServer) -> None:
    report = preflight(f"{plain_registry.host}/team/model")
    assert_passed(report)
    assert statuses(report)["token scope"] is Status.SKIPPED
    assert plain_registry.open_uploads("team/model") == []
    assert plain_registry.blobs() == []


def test_allowed_on_basic_registry(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.write_auth(basic_registry.host, "bob", USERS["bob"])
    report = preflight(f"{basic_registry.host}/bob/model")
    assert_passed(report)
    assert basic_registry.open_uploads("bob/model") == []


def test_existing_tag_is_reported(
    token_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    image = push_tiny_image(
        token_registry, "alice/model", "v1", user="alice", password="alice-secret-pw"
    )
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    report = preflight(f"{token_registry.host}/alice/model:v1")
    assert_passed(report)
    assert report.tag_exists is True
    tag = next(r for r in report.results if r.name == "tag")
    assert image.manifest_digest in tag.message
    assert token_registry.tags("alice/model") == {"v1": image.manifest_digest}


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_no_credentials(kind: str, request: pytest.FixtureRequest) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    report = preflight(f"{registry.host}/alice/model")
    failure = report.failure
    assert failure is not None and failure.name == "credentials"
    assert "no credentials" in failure.message
    assert failure.hint is not None
    assert f"skiff login {registry.host} -u" in failure.hint
    assert registry.repositories() == []


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_wrong_password(
    kind: str, request: pytest.FixtureRequest, docker_config: DockerConfig
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    docker_config.write_auth(registry.host, "alice", "stale-password-123")
    report = preflight(f"{registry.host}/alice/model")
    failure = report.failure
    assert failure is not None and failure.name == "credentials"
    assert "rejected" in failure.message and "'alice'" in failure.message
    assert failure.hint is not None and f"skiff login {registry.host}" in failure.hint
    assert "stale-password-123" not in repr(report.to_json())
    assert report.elapsed_ms < 1000


def test_broken_docker_config_is_reported_by_the_credentials_check(
    basic_registry: RegistryServer, docker_config: DockerConfig
) -> None:
    docker_config.path.write_text("{not json")
    report = preflight(f"{basic_registry.host}/alice/model")
    failure = report.failure
    assert failure is not None and failure.name == "credentials"
    assert str(docker_config.path) in failure.message + (failure.hint or "")


# -- transport ---------------------------------------------------------------------------------


def test_registry_down_names_host_and_port(unused_port: int) -> None:
    report = preflight(f"127.0.0.1:{unused_port}/a/b")
    failure = report.failure
    assert failure is not None and failure.name == "registry"
    assert f"127.0.0.1:{unused_port}" in failure.message
    assert report.elapsed_ms < 3000


def test_unknown_ca_then_trusted(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_cert is not None
    report = preflight(f"{tls_registry.host}/a/b")
    failure = report.failure
    assert failure is not None and failure.name == "registry"
    assert "certificate" in failure.message
    assert failure.hint is not None and "SSL_CERT_FILE" in failure.hint
    assert "ca.crt" in failure.hint
    trusted = replace(FAST, ca_file=tls_registry.ca_cert)
    assert_passed(preflight(f"{tls_registry.host}/a/b", options=trusted))


def test_docker_certs_dir_is_trusted(tls_registry: RegistryServer, tmp_path: Path) -> None:
    assert tls_registry.ca_cert is not None
    host_dir = tmp_path / tls_registry.host
    host_dir.mkdir()
    (host_dir / "ca.crt").write_bytes(tls_registry.ca_cert.read_bytes())
    assert_passed(preflight(f"{tls_registry.host}/a/b", options=replace(FAST, certs_dir=tmp_path)))


# -- input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("Alice/Model", "alice/model"),
        ("https://ghcr.io/alice/model", "ghcr.io/alice/model"),
        ("alice/my model", "alice/my-model"),
        ("a//b", "a/b"),
        ("ghcr.com/alice/model", "ghcr.io/alice/model"),
        ("a/b:-bad", None),
        ("a/" + "b" * 300, None),
    ],
)
def test_malformed_reference_is_input_error(text: str, suggestion: str | None) -> None:
    report = preflight(text)
    failure = report.failure
    assert failure is not None and failure.name == "reference"
    assert failure.severity is Severity.INPUT
    if suggestion is not None:
        assert failure.hint is not None and suggestion in failure.hint
    assert all(r.status is Status.SKIPPED for r in report.results[1:])


def test_invalid_cog_yaml_is_input_error_once_the_destination_is_known(
    plain_registry: RegistryServer, tmp_path: Path
) -> None:
    (tmp_path / "cog.yaml").write_text("build:\n  python_version: [\n")
    report = preflight(f"{plain_registry.host}/a/b", model_dir=tmp_path)
    failure = report.failure
    assert failure is not None and failure.name == "cog.yaml"
    assert failure.severity is Severity.INPUT
    assert statuses(report)["write access"] is Status.OK
    assert plain_registry.manifests("a/b") == []  # the dry push left nothing behind


def test_rejected_destination_is_told_before_cog_yaml_is_read(tmp_path: Path) -> None:
    """Validating cog.yaml costs its schema's import; a rejected destination answers first."""
    (tmp_path / "cog.yaml").write_text("build:\n  python_version: [\n")
    report = preflight("127.0.0.1:1/a/b", model_dir=tmp_path)
    failure = report.failure
    assert failure is not None and failure.name == "registry"
    assert failure.severity is Severity.DESTINATION
    assert statuses(report)["cog.yaml"] is Status.SKIPPED
    names = [result.name for result in report.results]
    assert names.index("cog.yaml") > names.index("tag")


# -- plugins hook in ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """A platform for 127.0.0.1 registries: one extra check, and a hint on every failure."""

    name: str = "recorder"

    def matches(self, reference: Reference) -> bool:
        return reference.repository.registry.startswith("127.0.0.1:")

    def checks(self) -> list[object]:
        return [ExtraCheck()]

    def refine(self, context: Context, result: CheckResult) -> CheckResult:
        return replace(result, hint=f"recorder: {result.name}")


@dataclass
class ExtraCheck:
    name: str = "extra"

    def run(self, context: Context) -> str:
        if context.facts.get("tag_exists"):
            raise CheckFailed("tag exists and this platform keeps tags immutable")
        return "extra ran after the built-ins"


def test_platform_check_runs_after_the_registrys_and_refines_failures(
    plain_registry: RegistryServer,
) -> None:
    report = preflight(f"{plain_registry.host}/a/b", platforms=[Recorder()])
    # The destination's checks, the platform's (a rejection is told before cog.yaml is read),
    # then the model folder's.
    assert [r.name for r in report.results][-4:] == ["tag", "typo", "extra", "cog.yaml"]
    assert report.ok
    push_tiny_image(plain_registry, "a/b")
    report = preflight(f"{plain_registry.host}/a/b", platforms=[Recorder()])
    failure = report.failure
    assert failure is not None and failure.name == "extra"
    assert failure.hint == "recorder: extra"


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


_path_text = st.text(alphabet=st.sampled_from(list("abAB09._-/:@ \x00é")), max_size=30)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=_path_text)
def test_any_input_gives_a_report_never_an_exception(
    plain_registry: RegistryServer, path: str
) -> None:
    report = preflight(f"{plain_registry.host}/{path}")
    failure = report.failure
    if failure is None:
        assert_passed(report)
    elif failure.name == "reference":
        assert failure.severity is Severity.INPUT
    else:  # a valid reference: only the registry may have refused it
        assert failure.severity is Severity.DESTINATION
        assert statuses(report)["reference"] is Status.OK


# -- plain HTTP beyond this machine: only when the user says so -------------------------------


def test_plain_http_registry_by_name_needs_opt_in(
    plain_registry: RegistryServer, own_name: str
) -> None:
    host = f"{own_name}:{plain_registry.port}"
    report = preflight(f"{host}/a/b")
    failure = report.failure
    assert failure is not None and failure.name == "registry"
    assert failure.message == f"{host} answers plain HTTP, not HTTPS"
    assert failure.hint is not None and f"SKIFF_INSECURE_REGISTRIES={host}" in failure.hint
    allowed = replace(FAST, insecure_hosts=frozenset({host}))
    assert_passed(preflight(f"{host}/a/b", options=allowed))


def test_insecure_registry_never_gets_credentials_over_plain_http(
    basic_registry: RegistryServer, docker_config: DockerConfig, own_name: str
) -> None:
    """Declared insecure, a registry may be reached over plain HTTP, but without credentials:
    unlike Docker, skiff never sends them where anyone on the path can read them."""
    host = f"{own_name}:{basic_registry.port}"
    docker_config.write_auth(host, "alice", USERS["alice"])
    allowed = replace(FAST, insecure_hosts=frozenset({host}))
    report = preflight(f"{host}/alice/model", options=allowed)
    failure = report.failure
    assert failure is not None and failure.name == "credentials"
    assert "refusing to send credentials" in failure.message
    assert USERS["alice"] not in repr(report.to_json())


def test_check_changes_nothing_visible(plain_registry: RegistryServer) -> None:
    """After an allowed check the registry's catalog is still empty: no repository appeared."""
    import httpx

    assert_passed(preflight(f"{plain_registry.host}/team/model:v1"))
    catalog = httpx.get(f"{plain_registry.url}/v2/_catalog").json()
    assert catalog == {"repositories": []}
    tags = httpx.get(f"{plain_registry.url}/v2/team/model/tags/list")
    assert tags.status_code == 404


@dataclass
class Crashing:
    """A third-party platform with bugs everywhere."""

    name: str = "crashing"

    def matches(self, reference: Reference) -> bool:
        return True

    def checks(self) -> list[object]:
        return [CrashingCheck()]

    def refine(self, context: Context, result: CheckResult) -> CheckResult:
        raise KeyError("refine bug")


@dataclass
class CrashingCheck:
    name: str = "buggy"

    def run(self, context: Context) -> str:
        raise ZeroDivisionError("check bug")


def test_a_plugins_bugs_do_not_stop_the_check(plain_registry: RegistryServer) -> None:
    report = preflight(f"{plain_registry.host}/a/b", platforms=[Crashing()])
    assert report.ok
    buggy = next(result for result in report.results if result.name == "buggy")
    assert buggy.status is Status.SKIPPED
    assert "crashed" in buggy.message and "ZeroDivisionError" in buggy.message
    # A failure keeps its own message and hint when the plugin's refine crashes.
    plain = preflight("127.0.0.1:1/a/b", platforms=[]).failure
    failure = preflight("127.0.0.1:1/a/b", platforms=[Crashing()]).failure
    assert failure is not None and plain is not None and failure.name == "registry"
    assert (failure.message, failure.hint) == (plain.message, plain.hint)


def test_a_callers_own_check_may_raise(plain_registry: RegistryServer) -> None:
    with pytest.raises(ZeroDivisionError):
        preflight(f"{plain_registry.host}/a/b", platforms=[], extra_checks=[CrashingCheck()])


@dataclass
class PlatformGate:
    """A platform with a check that needs only the reference and the intent."""

    name: str = "gate"

    def run(self, context: Context) -> str:
        if context.intent.platform != "linux/amd64":
            raise CheckFailed(f"amd64 only, not {context.intent.platform}")
        return "amd64"


class LocalRecorder(Recorder):
    def local_checks(self) -> list[object]:
        return [PlatformGate()]


class BrokenLocal(Recorder):
    def local_checks(self) -> list[object]:
        raise RuntimeError("a plugin's bug")


def test_local_checks_run_before_the_registry_is_asked(plain_registry: RegistryServer) -> None:
    from skiff.preflight import Intent

    text = f"{plain_registry.host}/a/b"
    refused = preflight(text, platforms=[LocalRecorder()], intent=Intent("linux/arm64"))
    assert [r.name for r in refused.results][:3] == ["reference", "gate", "registry"]
    assert statuses(refused)["gate"] is Status.FAILED
    assert statuses(refused)["registry"] is Status.SKIPPED  # nothing was asked
    allowed = preflight(text, platforms=[LocalRecorder()])
    assert statuses(allowed)["gate"] is Status.OK and allowed.ok
    # A plugin whose local_checks crashes costs nothing but its checks.
    assert preflight(text, platforms=[BrokenLocal()]).ok
