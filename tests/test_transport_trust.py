"""TLS trust per host: loaded in the background ahead of the first connection, shared between
clients, and exactly as strict as before: the system store (or SSL_CERT_FILE) plus Docker's
certs.d for that host, nothing else."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest

from skiff.reference import Repository
from skiff.registry.client import RegistryClient
from skiff.registry.errors import TLSFailure
from skiff.registry.transport import TransportOptions, prepare_ssl_context, ssl_context
from support import RegistryServer

FAST = TransportOptions(backoff=0.01, connect_timeout=1.0, read_timeout=5.0)


def _certs_dir_with_ca(tmp_path: Path, registry: RegistryServer, host: str) -> Path:
    assert registry.ca_cert is not None
    certs = tmp_path / "certs.d"
    (certs / host).mkdir(parents=True)
    (certs / host / "ca.crt").write_bytes(registry.ca_cert.read_bytes())
    return certs


def test_trust_prepared_in_the_background_is_the_same_trust(
    tls_registry: RegistryServer, tmp_path: Path
) -> None:
    trusted = replace(FAST, certs_dir=_certs_dir_with_ca(tmp_path, tls_registry, tls_registry.host))
    prepare_ssl_context(tls_registry.host, trusted)
    with RegistryClient(Repository(tls_registry.host, "a/b"), options=trusted) as client:
        assert client.ping().base_url == f"https://{tls_registry.host}"

    # The CA of another host in certs.d does not count; nor does anything prepared for it.
    elsewhere = replace(FAST, certs_dir=_certs_dir_with_ca(tmp_path / "x", tls_registry, "other:1"))
    prepare_ssl_context("other:1", elsewhere)
    prepare_ssl_context(tls_registry.host, elsewhere)
    with (
        RegistryClient(Repository(tls_registry.host, "a/b"), options=elsewhere) as client,
        pytest.raises(TLSFailure) as info,
    ):
        client.ping()
    assert "not trusted" in info.value.message


def test_one_context_serves_every_timeout(tmp_path: Path) -> None:
    options = replace(FAST, certs_dir=tmp_path)
    prepare_ssl_context("registry.example:5000", options)
    first = ssl_context("registry.example:5000", options)
    assert ssl_context("registry.example:5000", replace(options, read_timeout=300.0)) is first
    other_certs = replace(options, certs_dir=tmp_path / "other")
    assert ssl_context("registry.example:5000", other_certs) is not first
    assert first.verify_mode is ssl.CERT_REQUIRED and first.check_hostname


def test_an_insecure_host_is_not_verified(tmp_path: Path) -> None:
    options = replace(FAST, certs_dir=tmp_path, insecure_hosts=frozenset({"lab:5000"}))
    context = ssl_context("lab:5000", options)
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname
    assert ssl_context("lab:5001", options).verify_mode is ssl.CERT_REQUIRED


def test_a_missing_ca_file_fails_where_the_context_is_used_and_is_not_remembered(
    tls_registry: RegistryServer, tmp_path: Path
) -> None:
    assert tls_registry.ca_cert is not None
    bundle = tmp_path / "bundle.pem"
    options = replace(FAST, certs_dir=tmp_path, ca_file=bundle)
    prepare_ssl_context(tls_registry.host, options)
    with pytest.raises(OSError):
        ssl_context(tls_registry.host, options)
    bundle.write_bytes(tls_registry.ca_cert.read_bytes())
    with RegistryClient(Repository(tls_registry.host, "a/b"), options=options) as client:
        assert client.ping().base_url == f"https://{tls_registry.host}"


def test_timeouts_and_deadlines_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """SKIFF_TIMEOUT beats a caller's default read timeout; SKIFF_DEADLINE bounds a phase, or
    an upload's time without progress (an upload has no overall deadline); a typo or a value
    that is not positive turns nothing off."""
    monkeypatch.setenv("SKIFF_TIMEOUT", "7")
    monkeypatch.setenv("SKIFF_DEADLINE", "42")
    preflight = TransportOptions.from_env(read_timeout=10.0)
    assert (preflight.read_timeout, preflight.deadline, preflight.stall_deadline) == (7, 42, 42)
    upload = TransportOptions.from_env(read_timeout=30.0, deadline=None, phase="upload")
    assert (upload.read_timeout, upload.deadline, upload.stall_deadline) == (7, None, 42)
    for bad in ("", "soon", "0", "-3"):
        monkeypatch.setenv("SKIFF_TIMEOUT", bad)
        monkeypatch.setenv("SKIFF_DEADLINE", bad)
        options = TransportOptions.from_env(read_timeout=10.0)
        assert (options.read_timeout, options.deadline) == (10.0, 60.0), bad


def test_url_queries_are_hidden_in_logged_text() -> None:
    from skiff.registry.redact import redact

    line = (
        "HTTP Request: PUT http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=abc%3D&digest=sha256:1"
        ' "HTTP/1.1 201 Created" then https://bucket.s3.amazonaws.com/k?X-Amz-Signature=s3cr3t'
    )
    hidden = redact(line)
    assert "abc" not in hidden and "s3cr3t" not in hidden and "sha256:1" not in hidden
    assert "/v2/a/blobs/uploads/u?_state=...&digest=..." in hidden
    assert "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=..." in hidden
    assert redact("no url here, just a ?question") == "no url here, just a ?question"
