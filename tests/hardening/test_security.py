"""Security of a push: credentials appear nowhere they could leak (output, debug log, cache,
image); TLS is verified; credentials never cross plain HTTP to another machine; files that look
like secrets are flagged, and .dockerignore keeps them out."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from hardutil import make_model, skiff

from support import USERS, DockerConfig, RegistryServer, TokenIssuer, push_tiny_image
from support.misbehaving import MisbehavingServer, Reply

# -- what a pushed image holds ------------------------------------------------------------------


def image_blobs(registry: RegistryServer, repo: str, digest: str) -> dict[str, bytes]:
    """The manifest, the config and every layer of an image (layers uncompressed)."""
    manifest_bytes = registry.blob_bytes(digest)
    manifest = json.loads(manifest_bytes)
    blobs = {"manifest": manifest_bytes}
    blobs["config"] = registry.blob_bytes(manifest["config"]["digest"])
    for layer in manifest["layers"]:
        data = registry.blob_bytes(layer["digest"])
        blobs[layer["digest"]] = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return blobs


def image_files(registry: RegistryServer, repo: str, digest: str) -> dict[str, bytes]:
    """Path -> content of every regular file in the image's layers."""
    files: dict[str, bytes] = {}
    for name, data in image_blobs(registry, repo, digest).items():
        if not name.startswith("sha256:"):
            continue
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    files[member.name] = handle.read()
    return files


def secrets_of(user: str) -> list[str]:
    password = USERS[user]
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def grep_tree(root: Path, needles: list[str]) -> list[str]:
    """Files under ``root`` that contain any of ``needles``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(needle.encode() in data for needle in needles):
                found.append(str(path))
    return found


# -- credentials --------------------------------------------------------------------------------


@pytest.fixture
def minted(token_issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the issuer hands out during the test."""
    tokens: list[str] = []
    original = token_issuer.mint

    def recording_mint(*args: object, **kwargs: object) -> str:
        token = original(*args, **kwargs)  # type: ignore[arg-type]
        tokens.append(token)
        return token

    monkeypatch.setattr(token_issuer, "mint", recording_mint)
    return tokens


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_credentials_are_in_no_output_log_cache_or_image_after_a_push(
    auth: str,
    request: pytest.FixtureRequest,
    docker_config: DockerConfig,
    hermetic_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"{auth}_registry")
    minted: list[str] = request.getfixturevalue("minted") if auth == "token" else []
    push_tiny_image(registry, "alice/base", "1", user="alice", password=USERS["alice"])
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{registry.host}/alice/base:1")
    docker_config.write_auth(registry.host, "alice", USERS["alice"])
    model = make_model(tmp_path)
    ref = f"{registry.host}/alice/model:v1"

    human = skiff("push", "--debug", ref, "-C", str(model))
    assert human.returncode == 0, human.stdout + human.stderr
    assert "debug:" in human.stderr  # the request log is there...
    as_json = skiff("push", "--debug", "--json", ref, "-C", str(model))
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    secrets = secrets_of("alice") + minted
    assert auth == "basic" or minted, "no token was issued: the test proves nothing"
    for run in (human, as_json):
        for secret in secrets:  # ...and holds none of them
            assert secret not in run.stdout and secret not in run.stderr
    assert grep_tree(hermetic_env, secrets) == []  # the build cache
    digest = json.loads(as_json.stdout)["digest"]
    for name, data in image_blobs(registry, "alice/model", digest).items():
        for secret in secrets:
            assert secret.encode() not in data, f"a credential is in {name}"


@pytest.mark.parametrize("challenge", ["basic", "bearer"])
def test_credentials_never_cross_plain_http_to_another_machine(
    challenge: str,
    own_name: str,
    docker_config: DockerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry reached by name (not loopback) over plain HTTP, allowed as insecure: it is
    used, but neither it nor its token service ever gets the password."""
    header = {
        "basic": 'Basic realm="registry"',
        "bearer": 'Bearer realm="http://{name}:{port}/token",service="registry"',
    }[challenge]
    with MisbehavingServer() as server:
        host = f"{own_name}:{server.port}"
        wants_auth = Reply(
            401, headers={"WWW-Authenticate": header.format(name=own_name, port=server.port)}
        )
        server.fallback = wants_auth
        monkeypatch.setenv("SKIFF_INSECURE_REGISTRIES", host)
        docker_config.write_auth(host, "alice", USERS["alice"])
        model = make_model(tmp_path)
        run = skiff("push", f"{host}/alice/model:v1", "-C", str(model))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "refusing to send credentials" in run.stderr
    assert "Traceback" not in run.stderr
    assert server.seen, "skiff never reached the server: the test proves nothing"
    assert not any(seen.authorized for seen in server.seen)
    for secret in secrets_of("alice"):
        assert secret not in run.stdout + run.stderr


def test_tls_is_verified_unless_the_registry_is_listed_insecure(
    tls_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(tmp_path)
    ref = f"{tls_registry.host}/demo/tls:v1"
    monkeypatch.setenv("SKIFF_BASE_IMAGE", "-")  # never reached: the push stops at preflight
    untrusted = skiff("push", ref, "-C", str(model))
    assert untrusted.returncode == 3, untrusted.stdout + untrusted.stderr
    assert "certificate" in untrusted.stderr.lower()
    assert tls_registry.repositories() == []

    # Listed insecure: TLS without verification (as Docker's insecure-registries).
    monkeypatch.setenv("SKIFF_INSECURE_REGISTRIES", tls_registry.host)
    push_tiny_image(tls_registry, "base/tiny", "1")
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{tls_registry.host}/base/tiny:1")
    insecure = skiff("push", ref, "-C", str(model), "--json")
    assert insecure.returncode == 0, insecure.stdout + insecure.stderr
    assert tls_registry.tags("demo/tls") == {"v1": json.loads(insecure.stdout)["digest"]}


# -- files that look like secrets ----------------------------------------------------------------

SECRET_FILES = {
    ".env": b"API_KEY=sk-live-0123456789\n",
    "id_rsa": b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n",
    ".aws/credentials": b"[default]\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n",
}


def test_secret_looking_files_warn_and_dockerignore_keeps_them_out(
    registry: RegistryServer, tmp_path: Path
) -> None:
    model = make_model(tmp_path)
    for name, data in SECRET_FILES.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(data)

    warned = skiff("push", f"{registry.host}/demo/secrets:v1", "-C", str(model))
    assert warned.returncode == 0, warned.stdout + warned.stderr
    for name in SECRET_FILES:
        assert f"warning: {name} looks like a secret" in " ".join(warned.stderr.split())
    shipped = skiff("push", f"{registry.host}/demo/secrets:v1", "-C", str(model), "--json")
    summary = json.loads(shipped.stdout)
    files = image_files(registry, "demo/secrets", summary["digest"])
    # The warning was right: without .dockerignore they are in the image.
    for name, data in SECRET_FILES.items():
        assert any(path.endswith(name) and content == data for path, content in files.items())

    with (model / ".dockerignore").open("a") as ignore:
        ignore.write("\n.env\nid_rsa\n.aws/\n")
    clean = skiff("push", f"{registry.host}/demo/secrets:v2", "-C", str(model), "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    summary = json.loads(clean.stdout)
    assert not [w for w in summary["warnings"] if "looks like a secret" in w]
    assert "looks like a secret" not in clean.stderr
    files = image_files(registry, "demo/secrets", summary["digest"])
    blobs = image_blobs(registry, "demo/secrets", summary["digest"])
    for name, data in SECRET_FILES.items():
        assert not any(path.endswith(name) for path in files), f"{name} is in the image"
        assert not any(data in blob for blob in blobs.values()), f"{name}'s content is in the image"
