"""Known destinations: skiff remembers where it pushed, and a new repository a typo away from one
of them is refused before any build (exit 3) unless --new says it is meant.

The store is tested directly (its file, its locking under concurrent pushes, near misses); the
refusal through the CLI, after real pushes of the example model to real registries on
127.0.0.1 (plain, and token auth where alice may push only to alice/*)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from skiff import known
from skiff.reference import parse
from support import USERS, DockerConfig, RegistryServer, push_tiny_image

SKIFF = Path(sys.executable).parent / "skiff"
DIGEST = "sha256:" + "ab" * 32


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def store(cache: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((cache / known.FILENAME).read_text())
    return document


# -- the store -----------------------------------------------------------------------------------


def test_record_counts_pushes_per_repository(hermetic_env: Path) -> None:
    known.record(parse("r8.im/acme/sdxl-turbo:v1"), DIGEST)
    known.record(parse("r8.im/acme/sdxl-turbo:v2"), DIGEST)
    known.record(parse("ghcr.io/acme/other"), DIGEST)
    [turbo, other] = known.load()
    assert (turbo.repository, turbo.count, turbo.reference) == (
        "r8.im/acme/sdxl-turbo",
        2,
        "r8.im/acme/sdxl-turbo:v2",
    )
    assert other.count == 1 and other.describe() == f"pushed once, last {other.last_date}"
    assert turbo.describe() == f"pushed 2 times, last {time.strftime('%Y-%m-%d', time.gmtime())}"
    entry = store(hermetic_env)["destinations"]["r8.im/acme/sdxl-turbo"]
    assert set(entry) == {"reference", "digest", "last", "count"}  # nothing else, no secret


def test_concurrent_pushes_lose_no_count(hermetic_env: Path) -> None:
    repositories = [parse(f"localhost:5000/team/model-{i}") for i in range(4)]

    def push_many(index: int) -> None:
        for _ in range(10):
            known.record(repositories[index % 4], DIGEST)

    threads = [threading.Thread(target=push_many, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {k.repository: k.count for k in known.load()} == {
        str(r.repository): 20 for r in repositories
    }
    assert not [p for p in hermetic_env.iterdir() if p.name.endswith(".tmp")]


def test_unreadable_store_counts_as_empty_and_is_rewritten(hermetic_env: Path) -> None:
    (hermetic_env / known.FILENAME).write_text("{not json")
    assert known.load() == []
    known.record(parse("r8.im/acme/sdxl"), DIGEST)
    assert [k.count for k in known.load()] == [1]


def test_a_store_that_cannot_be_written_never_fails_a_push(
    hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = hermetic_env / "file"
    blocker.write_text("")
    monkeypatch.setenv("SKIFF_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot exist
    known.record(parse("r8.im/acme/sdxl"), DIGEST)  # no exception
    assert known.load() == []


@pytest.mark.parametrize(
    ("a", "b", "edits"),
    [("acme/sdxl-turob", "acme/sdxl-turbo", 1), ("acme/sdxl", "acme/sdx1", 1),
     ("acme/sdxl", "acme/sdxl", 0), ("acme/sdxl", "acme/sd", 2), ("acme/sdxl", "acme/sxdl", 1),
     ("acme/sdxl", "bob/whisper", 4)],
)  # fmt: skip
def test_distance(a: str, b: str, edits: int) -> None:
    assert known.distance(a, b) == edits


def test_near_misses_only_within_the_same_registry(hermetic_env: Path) -> None:
    known.record(parse("r8.im/acme/sdxl-turbo"), DIGEST)
    known.record(parse("r8.im/acme/sdxl"), DIGEST)
    near = known.near(parse("r8.im/acme/sdxl-turob").repository)
    assert near is not None and near.repository == "r8.im/acme/sdxl-turbo"
    assert known.near(parse("ghcr.io/acme/sdxl-turob").repository) is None  # other registry
    assert known.near(parse("r8.im/acme/sdxl").repository) is None  # known itself
    assert known.near(parse("r8.im/acme/whisper").repository) is None  # far from all
    # A short path tolerates one edit only: two would make most short names alike.
    known.record(parse("r8.im/a/bc"), DIGEST)
    assert known.near(parse("r8.im/a/bd").repository) is not None
    assert known.near(parse("r8.im/a/de").repository) is None


# -- through the CLI, after real pushes ----------------------------------------------------------


def tags(registry: RegistryServer, path: str) -> list[str] | None:
    """The repository's tags, or None if the registry has never heard of it."""
    response = httpx.get(f"http://{registry.host}/v2/{path}/tags/list", timeout=10)
    if response.status_code == 404:
        return None
    found: list[str] = response.json().get("tags") or []
    return found


def test_typo_of_a_known_destination_is_refused_then_accepted_with_new(
    registry: RegistryServer, model: Path
) -> None:
    host = registry.host
    first = run("push", f"{host}/acme/sdxl-turbo:v1", "-C", str(model))
    assert first.returncode == 0, first.stderr
    typo = run("push", f"{host}/acme/sdxl-turob:v1", "-C", str(model))
    assert typo.returncode == 3, typo.stderr
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert (
        f"repository {host}/acme/sdxl-turob does not exist yet; did you mean "
        f"{host}/acme/sdxl-turbo (pushed once, last {today})?"
    ) in typo.stderr
    assert "--new" in typo.stderr
    assert tags(registry, "acme/sdxl-turob") is None  # nothing was written there

    as_json = run("check", f"{host}/acme/sdxl-turob:v1", "--json")
    assert as_json.returncode == 3
    document = json.loads(as_json.stdout)
    assert document["suggestion"] == f"{host}/acme/sdxl-turbo:v1"
    assert document["error"].startswith(f"repository {host}/acme/sdxl-turob does not exist yet")

    meant = run("push", f"{host}/acme/sdxl-turob:v1", "-C", str(model), "--new")
    assert meant.returncode == 0, meant.stderr
    assert tags(registry, "acme/sdxl-turob") == ["v1"]
    # Now both are known: neither is held up any more.
    assert run("check", f"{host}/acme/sdxl-turob:v2").returncode == 0


def test_existing_or_far_repositories_are_never_held_up(
    registry: RegistryServer, model: Path, hermetic_env: Path
) -> None:
    host = registry.host
    known.record(parse(f"{host}/acme/sdxl-turbo:v1"), DIGEST)
    push_tiny_image(registry, "acme/sdxl-turbp", "v1")  # exists, a typo away from a known one
    existing = run("check", f"{host}/acme/sdxl-turbp:v2")
    assert existing.returncode == 0, existing.stderr
    far = run("check", f"{host}/acme/whisper:v1", "--json")
    assert far.returncode == 0, far.stdout
    checks = {c["name"]: c for c in json.loads(far.stdout)["checks"]}
    assert checks["typo"]["status"] == "ok"
    assert "not close to any repository pushed to before" in checks["typo"]["message"]


def test_a_name_and_the_known_check_together(registry: RegistryServer, model: Path) -> None:
    """A name in skiff.yaml goes where it says; a push there is remembered like any other."""
    (model / "skiff.yaml").write_text(f"destinations:\n  prod: {registry.host}/acme/sdxl:v1\n")
    pushed = run("push", "-C", str(model), "--json")  # the only destination
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["reference"] == f"{registry.host}/acme/sdxl:v1"
    [entry] = [k for k in known.load() if k.path == "acme/sdxl"]
    assert entry.count == 1 and entry.digest == json.loads(pushed.stdout)["digest"]
    typo = run("check", f"{registry.host}/acme/sdx1:v1")  # a one for an l
    assert typo.returncode == 3
    assert f"did you mean {registry.host}/acme/sdxl (pushed once" in typo.stderr


def test_token_registry_alice_typo_caught(
    token_registry: RegistryServer, docker_config: DockerConfig, model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # alice owns alice/*; the base is hers too, so that she can read it.
    push_tiny_image(token_registry, "alice/base", "1", user="alice", password=USERS["alice"])
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{token_registry.host}/alice/base:1")
    docker_config.write_auth(token_registry.host, "alice", USERS["alice"])
    host = token_registry.host
    pushed = run("push", f"{host}/alice/sdxl-turbo:v1", "-C", str(model))
    assert pushed.returncode == 0, pushed.stderr
    typo = run("push", f"{host}/alice/sdxl-trubo:v1", "-C", str(model))
    assert typo.returncode == 3
    assert f"did you mean {host}/alice/sdxl-turbo (pushed once" in typo.stderr
    # Where alice may not push at all, that is what she is told, not a typo.
    denied = run("check", f"{host}/bob/sdxl-turbo:v1")
    assert denied.returncode == 3 and "may not push" in denied.stderr


def test_a_malformed_typo_is_corrected_to_the_known_destination(hermetic_env: Path) -> None:
    """``sdxI`` (a capital i) is no valid path; lowercased it would be ``sdxi``, a new repository:
    the known ``sdxl`` is what was meant. Told before the registry is asked (exit 2)."""
    known.record(parse("127.0.0.1:1/acme/sdxl:v1"), DIGEST)
    done = run("check", "127.0.0.1:1/acme/sdxI:v2", "--json")
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert document["suggestion"] == "127.0.0.1:1/acme/sdxl:v2"
    assert document["hint"].startswith("did you mean 127.0.0.1:1/acme/sdxl:v2 (pushed once, last ")
    # Without a known destination near it, the plain correction.
    plain = run("check", "127.0.0.1:1/acme/Whisper", "--json")
    assert json.loads(plain.stdout)["suggestion"] == "127.0.0.1:1/acme/whisper"


def test_the_least_recently_pushed_are_forgotten_beyond_the_limit(
    hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known, "MAX_ENTRIES", 3)
    path = hermetic_env / known.FILENAME
    old = {f"r8.im/acme/m{i}": {"reference": f"r8.im/acme/m{i}", "digest": DIGEST,
                                "last": f"2026-01-0{i + 1}T00:00:00Z", "count": 1}
           for i in range(3)}  # fmt: skip
    path.write_text(json.dumps({"version": 1, "destinations": old}))
    known.record(parse("r8.im/acme/new"), DIGEST)
    assert sorted(k.repository for k in known.load()) == [
        "r8.im/acme/m1",
        "r8.im/acme/m2",
        "r8.im/acme/new",
    ]
