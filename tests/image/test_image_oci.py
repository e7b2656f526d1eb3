"""OCI values: canonical bytes, parsing Docker and OCI documents, extending a base config."""

from __future__ import annotations

import hashlib
import json

import pytest

from skiff.digest import Digest
from skiff.errors import BuildFailed, InvalidInput
from skiff.image.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)

D1 = Digest("1" * 64)
D2 = Digest("2" * 64)


def test_manifest_bytes_are_canonical_and_digest_is_their_sha256() -> None:
    manifest = Manifest(Descriptor(OCI_CONFIG, D1, 10), (Descriptor(OCI_LAYER, D2, 20),))
    data = manifest.to_bytes()
    assert b" " not in data
    assert json.loads(data)["schemaVersion"] == 2
    assert manifest.digest.hex == hashlib.sha256(data).hexdigest()
    assert Manifest.from_bytes(data) == manifest
    assert manifest.descriptor().size == len(data)


def test_docker_manifest_parses() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": str(D1),
            "size": 5,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": str(D2),
                "size": 7,
            }
        ],
    }
    manifest = Manifest.from_bytes(json.dumps(doc).encode())
    assert manifest.media_type == DOCKER_MANIFEST
    assert manifest.layers[0].digest == D2


def test_manifest_rejects_an_index() -> None:
    with pytest.raises(BuildFailed):
        Manifest.from_bytes(
            json.dumps(
                {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": []}
            ).encode()
        )


def test_index_selects_platform_and_names_the_ones_offered() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": str(D1),
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": str(D2),
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ],
    }
    index = Index.from_bytes(json.dumps(doc).encode())
    assert index.select(Platform.parse("linux/arm64")).digest == D2
    assert index.select(Platform.parse("linux/x86_64")).digest == D1
    with pytest.raises(BuildFailed, match="linux/amd64, linux/arm64/v8"):
        index.select(Platform.parse("linux/s390x"))


def test_platform_parse() -> None:
    assert Platform.parse("linux/aarch64") == Platform("linux", "arm64")
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(InvalidInput):
        Platform.parse("amd64")


BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-05-01T10:00:00.123Z",
    "container": "abc123",
    "docker_version": "20.10",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"],
        "Cmd": ["python3"],
        "User": "root",
        "ExposedPorts": {"80/tcp": {}},
    },
    "rootfs": {"type": "layers", "diff_ids": [str(D1)]},
    "history": [{"created": "2024-05-01T10:00:00Z", "created_by": "debootstrap"}],
}


def test_extending_a_base_config_keeps_unknown_fields_and_drops_build_bookkeeping() -> None:
    base = ImageConfig.from_bytes(json.dumps(BASE_CONFIG).encode())
    image = (
        base.with_env({"LANG": "en_US.UTF-8", "PYTHONPATH": "/opt/skiff/site-packages"})
        .with_run(cmd=["python", "-m", "cog.server.http"], working_dir="/src")
        .with_labels({"run.cog.version": "0.1.0"})
        .with_layers([D2], "skiff: source")
    )
    doc = json.loads(image.to_bytes())
    assert doc["config"]["Env"] == [
        "PATH=/usr/local/bin:/usr/bin",
        "LANG=en_US.UTF-8",
        "PYTHONPATH=/opt/skiff/site-packages",
    ]
    assert doc["config"]["Cmd"] == ["python", "-m", "cog.server.http"]
    assert doc["config"]["WorkingDir"] == "/src"
    assert doc["config"]["User"] == "root"
    assert doc["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert doc["config"]["Labels"] == {"run.cog.version": "0.1.0"}
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [str(D1), str(D2)]}
    assert len(doc["history"]) == 2
    assert doc["created"] == "1970-01-01T00:00:00Z"
    assert "container" not in doc and "docker_version" not in doc
    # Same values, same bytes.
    assert ImageConfig.from_bytes(image.to_bytes()).to_bytes() == image.to_bytes()


def test_new_entrypoint_clears_the_base_cmd() -> None:
    base = ImageConfig.from_bytes(json.dumps(BASE_CONFIG).encode())
    doc = json.loads(base.with_run(entrypoint=["/bin/sh"]).to_bytes())
    assert doc["config"]["Entrypoint"] == ["/bin/sh"]
    assert "Cmd" not in doc["config"]


def test_malformed_config_is_a_build_error() -> None:
    with pytest.raises(BuildFailed):
        ImageConfig.from_bytes(b"[1, 2]")
    with pytest.raises(BuildFailed):
        ImageConfig.from_bytes(json.dumps({"rootfs": {"diff_ids": ["md5:x"]}}).encode())


def test_config_descriptor_matches_its_bytes() -> None:
    config = ImageConfig.for_platform(Platform.parse("linux/arm64")).with_layers([D1], "x")
    desc = config.descriptor()
    assert desc.media_type == OCI_CONFIG
    assert desc.digest == Digest.of(config.to_bytes())
    assert json.loads(config.to_bytes())["architecture"] == "arm64"
    assert OCI_MANIFEST.endswith("manifest.v1+json")
