"""``skiff push REF1 REF2 ...``: every destination checked before any build work, one build, each
destination pushed in turn, a failed one not stopping the others.

Run as users run it (the CLI, a subprocess) against real registries on 127.0.0.1: two at once,
one of them with token auth where alice may push only to alice/*, and one behind a proxy of the
test's own that kills its registry mid-push."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import USERS, DockerConfig, RegistryServer
from support.faultproxy import FaultProxy

SKIFF = Path(sys.executable).parent / "skiff"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def cached_blobs(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("blobs/sha256/*") if path.is_file()]


@pytest.fixture
def first(registry: RegistryServer) -> RegistryServer:
    return registry


@pytest.fixture
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("second-registry")) as registry:
        yield registry


def test_one_forbidden_destination_stops_all_before_any_build(
    token_registry: RegistryServer, first: RegistryServer, docker_config: DockerConfig,
    model: Path, hermetic_env: Path,
) -> None:  # fmt: skip
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    allowed = f"{token_registry.host}/alice/model:v1"
    forbidden = f"{token_registry.host}/bob/model:v1"
    done = run("push", f"{first.host}/acme/model:v1", allowed, forbidden, "-C", str(model))
    assert done.returncode == 3, done.stderr
    assert f"{forbidden}: 'alice' may not push to {token_registry.host}/bob/model" in done.stderr
    assert "1 of 3 destinations refused, nothing was built or pushed" in done.stderr
    assert cached_blobs(hermetic_env) == []  # no build work at all
    # Not a layer or manifest anywhere (the write probes' sessions were cancelled).
    assert token_registry.layers("alice/model") == [] and first.layers("acme/model") == []
    assert token_registry.manifests("alice/model") == [] and first.manifests("acme/model") == []

    as_json = run("push", allowed, forbidden, "-C", str(model), "--json")
    assert as_json.returncode == 3
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert [d["ok"] for d in document["destinations"]] == [True, False]


def test_two_registries_one_build_the_same_digest_everywhere(
    first: RegistryServer, second: RegistryServer, model: Path
) -> None:
    (model / "skiff.yaml").write_text(f"destinations:\n  backup: {second.host}/team/hello:v1\n")
    done = run(
        "push", f"{first.host}/acme/hello:v1", "backup", f"{second.host}/team/hello-copy:v1",
        "-C", str(model), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert document["ok"] is True
    one, backup, copy = document["destinations"]
    assert backup["destination"] == "backup"
    assert document["digest"] == one["digest"] == backup["digest"] == copy["digest"]
    assert first.tags("acme/hello") == {"v1": one["digest"]}
    assert second.tags("team/hello") == {"v1": one["digest"]}
    assert second.tags("team/hello-copy") == {"v1": one["digest"]}
    # The second registry got every blob once: the copy beside it mounted them all.
    assert {layer["status"] for layer in backup["layers"]} == {"uploaded"}
    assert {layer["status"] for layer in copy["layers"]} == {"mounted"}
    assert copy["bytes_uploaded"] == 0

    human = run("push", f"{first.host}/acme/hello:v1", "backup", "-C", str(model))
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines() == [
        f"{first.host}/acme/hello@{one['digest']}",
        f"{second.host}/team/hello@{one['digest']}",
    ]
    assert "Pushing to 2 destinations" in human.stderr


def test_a_registry_killed_mid_push_does_not_stop_the_other(
    first: RegistryServer, second: RegistryServer, model: Path
) -> None:
    with FaultProxy(second.host) as proxy:
        # The first upload into the second registry kills it, as a crash would.
        proxy.reset("PUT", r"/blobs/uploads/", after_body_bytes=0, on_fire=second.kill)
        refs = (f"{proxy.host}/team/hello:v1", f"{first.host}/acme/hello:v1")
        done = run("push", *refs, "-C", str(model), "--json")
        assert done.returncode == 5, done.stderr
        document = json.loads(done.stdout)
        failed, pushed = document["destinations"]
        assert failed["ok"] is False and failed["error"].startswith("upload to ")
        assert pushed["ok"] is True and first.tags("acme/hello") == {"v1": pushed["digest"]}

        second.start()
        proxy.disarm()
        again = run("push", *refs, "-C", str(model), "--json")
        assert again.returncode == 0, again.stderr
        redone, unchanged = json.loads(again.stdout)["destinations"]
        assert redone["digest"] == pushed["digest"]
        assert second.tags("team/hello") == {"v1": pushed["digest"]}
        assert unchanged["bytes_uploaded"] == 0  # only what each lacked was sent
