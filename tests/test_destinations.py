"""Named destinations: skiff.yaml, bare words as names, and a push without an argument going to
cog.yaml's model:/image: (with Cog's COG_MODEL* overrides) or to skiff.yaml's only destination.

The module is tested directly for its rules, and through the CLI (a subprocess, as users run
it) against a real registry on 127.0.0.1 for what users see: exit codes and messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skiff import destinations
from skiff.destinations import CogDestination, Resolved, is_name
from skiff.errors import InvalidInput
from support import RegistryServer

SKIFF = Path(sys.executable).parent / "skiff"
TIMESTAMP = re.compile(r":\d{8}T\d{6}Z$")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def write(folder: Path, text: str) -> Path:
    (folder / "skiff.yaml").write_text(text)
    return folder


# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [("prod", True), ("my-model_2", True), ("ubuntu", True), ("acme/model", False),
     ("localhost:5000", False), ("ghcr.io", False), ("model:v1", False), ("", False)],
)  # fmt: skip
def test_a_bare_word_is_a_name(text: str, name: bool) -> None:
    assert is_name(text) is name


def test_skiff_yaml_names_resolve(tmp_path: Path) -> None:
    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n  staging: ghcr.io/acme/sdxl:st\n")
    assert destinations.resolve("prod", tmp_path) == Resolved(
        "r8.im/acme/sdxl", "prod", "skiff.yaml"
    )
    assert destinations.resolve("staging", tmp_path).reference == "ghcr.io/acme/sdxl:st"
    # A reference is taken as it is, whatever skiff.yaml says.
    assert destinations.resolve("r8.im/acme/other", tmp_path) == Resolved("r8.im/acme/other")


def test_unknown_name_suggests_the_closest(tmp_path: Path) -> None:
    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n  staging: ghcr.io/acme/sdxl\n")
    with pytest.raises(InvalidInput) as info:
        destinations.resolve("prdo", tmp_path)
    assert info.value.message.startswith("no destination named 'prdo' in ")
    assert info.value.hint == "did you mean prod (r8.im/acme/sdxl)?"
    with pytest.raises(InvalidInput) as far:
        destinations.resolve("qa", tmp_path)
    assert far.value.hint == "the destinations in skiff.yaml: prod, staging"


def test_bare_word_without_skiff_yaml_is_never_docker_hub_library(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        destinations.resolve("ubuntu", tmp_path)
    assert "no destination named 'ubuntu'" in info.value.message
    assert info.value.hint is not None and "ghcr.io/me/ubuntu" in info.value.hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("destinations:\n  prod: [1, 2]\n", "skiff.yaml line 2: destination 'prod' must be a"),
        ("destinations:\n  prod: r8.im/a/b\n  prod: r8.im/a/c\n",
         "skiff.yaml line 3: destination 'prod' is named twice (first on line 2)"),
        ("destinatons:\n  prod: r8.im/a/b\n", "skiff.yaml line 1: unknown field 'destinatons'"),
        ("destinations:\n  r8.im/a/b: prod\n", "skiff.yaml line 2: 'r8.im/a/b' cannot name"),
        ("destinations:\n  prod: ubuntu\n", "skiff.yaml line 2: destination 'prod' is 'ubuntu', "
         "a bare word"),
        ("destinations:\n  prod: ghcr.io/Acme/x\n", "skiff.yaml line 2: destination 'prod': "
         "invalid image reference"),
        ("destinations:\n  prod: 12\n", "skiff.yaml line 2: destination 'prod' must be a"),
        ("destinations: r8.im/a/b\n", "skiff.yaml line 1: destinations: must be a mapping"),
        ("- r8.im/a/b\n", "skiff.yaml line 1: must be a mapping"),
        ("destinations:\n  prod: 'r8.im/a\n", "skiff.yaml line 3: invalid YAML"),
    ],
)  # fmt: skip
def test_skiff_yaml_mistakes_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, text)
    with pytest.raises(InvalidInput) as info:
        destinations.load(tmp_path)
    assert info.value.message.startswith(expected), info.value.message


def test_empty_skiff_yaml_names_nothing(tmp_path: Path) -> None:
    assert destinations.load(write(tmp_path, "")) == {}
    assert destinations.load(write(tmp_path, "destinations:\n")) == {}


def test_no_argument_goes_to_the_only_destination(tmp_path: Path) -> None:
    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n")
    assert destinations.resolve(None, tmp_path, None).describe() == "prod (r8.im/acme/sdxl)"
    # cog.yaml's own destination comes first.
    cog = CogDestination(image="ghcr.io/acme/sdxl:v1")
    assert destinations.resolve(None, tmp_path, cog) == Resolved(
        "ghcr.io/acme/sdxl:v1", source="cog.yaml image:"
    )
    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n  qa: r8.im/acme/sdxl-qa\n")
    with pytest.raises(InvalidInput) as info:
        destinations.resolve(None, tmp_path, None)
    assert info.value.message == "no destination: skiff.yaml names several (prod, qa)"


# -- cog.yaml's model: and Cog's overrides --------------------------------------------------------


def test_model_gets_a_timestamp_tag_or_cog_model_tag() -> None:
    resolved = CogDestination(model="r8.im/acme/sdxl").resolve({})
    assert resolved is not None and TIMESTAMP.search(resolved.reference)
    assert resolved.reference.startswith("r8.im/acme/sdxl:")
    tagged = CogDestination(model="r8.im/acme/sdxl").resolve({"COG_MODEL_TAG": "v2"})
    assert tagged == Resolved("r8.im/acme/sdxl:v2", source="cog.yaml model: with COG_MODEL_TAG")


def test_overrides_replace_one_part_each() -> None:
    env = {"COG_MODEL_REGISTRY": "ghcr.io", "COG_MODEL_REPO": "acme/other", "COG_MODEL_TAG": "t"}
    resolved = CogDestination(model="r8.im/acme/sdxl").resolve(env)
    assert resolved is not None and resolved.reference == "ghcr.io/acme/other:t"
    # Only a repository: Replicate's registry, as Cog has it.
    alone = CogDestination().resolve({"COG_MODEL_REPO": "acme/x", "COG_MODEL_TAG": "t"})
    assert alone is not None and alone.reference == "r8.im/acme/x:t"


def test_cog_model_wins_outright() -> None:
    env = {"COG_MODEL": "localhost:5000/a/b:v1", "COG_MODEL_REPO": "ignored/x"}
    assert CogDestination(model="r8.im/acme/sdxl").resolve(env) == Resolved(
        "localhost:5000/a/b:v1", source="COG_MODEL"
    )
    untagged = CogDestination().resolve({"COG_MODEL": "localhost:5000/a/b"})
    assert untagged is not None and TIMESTAMP.search(untagged.reference)


def test_image_alone_ignores_a_lone_tag_override() -> None:
    assert CogDestination(image="ghcr.io/a/b:v1").resolve({"COG_MODEL_TAG": "x"}) == Resolved(
        "ghcr.io/a/b:v1", source="cog.yaml image:"
    )


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"COG_MODEL_REPO": "acme/x"}, "image: in cog.yaml cannot be combined with COG_MODEL*"),
        ({"COG_MODEL": "ghcr.io/X/y"}, "invalid COG_MODEL: invalid image reference"),
        ({"COG_MODEL_REGISTRY": "ghcr.io/acme"}, "invalid COG_MODEL_REGISTRY 'ghcr.io/acme'"),
        ({"COG_MODEL_REPO": "acme/x:v1"}, "invalid COG_MODEL_REPO 'acme/x:v1'"),
        ({"COG_MODEL_REPO": "a/b", "COG_MODEL_TAG": "cog-image.1"}, "invalid COG_MODEL_TAG"),
        ({"COG_MODEL_REPO": "a/b", "COG_MODEL_TAG": "-x"}, "invalid COG_MODEL_TAG '-x'"),
    ],
)
def test_bad_overrides_are_invalid_input(env: dict[str, str], problem: str) -> None:
    image = "ghcr.io/a/b:v1" if "COG_MODEL_REPO" in env and len(env) == 1 else None
    with pytest.raises(InvalidInput) as info:
        CogDestination(image=image).resolve(env)
    assert info.value.message.startswith(problem), info.value.message


def test_cog_yaml_model_field_is_a_bare_repository(tmp_path: Path) -> None:
    from skiff import config

    body = "build:\n  python_version: '3.11'\n"
    (tmp_path / "cog.yaml").write_text(body + "model: r8.im/acme/sdxl\n")
    assert config.load(tmp_path).model == "r8.im/acme/sdxl"
    (tmp_path / "cog.yaml").write_text(body + "model: r8.im/acme/sdxl:v1\n")
    with pytest.raises(InvalidInput) as tagged:
        config.load(tmp_path)
    assert tagged.value.message.startswith("cog.yaml line 3: model: must be a bare repository")
    (tmp_path / "cog.yaml").write_text(body + "image: r8.im/acme/a\nmodel: r8.im/acme/sdxl\n")
    with pytest.raises(InvalidInput) as both:
        config.load(tmp_path)
    assert both.value.message == "cog.yaml line 4: set either image: or model:, not both"


# -- through the CLI, against a real registry ---------------------------------------------------


def test_check_a_name(plain_registry: RegistryServer, tmp_path: Path) -> None:
    write(tmp_path, f"destinations:\n  local: {plain_registry.host}/acme/model:v1\n")
    done = run("check", "local", "-C", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"Checking local ({plain_registry.host}/acme/model:v1)" in done.stderr
    assert "ready: skiff push local" in done.stderr
    as_json = run("check", "local", "-C", str(tmp_path), "--json")
    document = json.loads(as_json.stdout)
    assert document["ok"] is True and document["destination"] == "local"
    assert document["reference"] == f"{plain_registry.host}/acme/model:v1"


def test_unknown_name_exits_2_with_did_you_mean(tmp_path: Path) -> None:
    write(tmp_path, "destinations:\n  production: r8.im/acme/sdxl\n")
    for command in ("check", "push"):
        done = run(command, "prodution", "-C", str(tmp_path))
        assert done.returncode == 2, done.stderr
        assert "no destination named 'prodution'" in done.stderr
        assert "did you mean production (r8.im/acme/sdxl)?" in done.stderr
    as_json = run("check", "prodution", "-C", str(tmp_path), "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["hint"] == "did you mean production (r8.im/acme/sdxl)?"


def test_bad_skiff_yaml_exits_2_naming_the_line(tmp_path: Path) -> None:
    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n  prod: r8.im/acme/other\n")
    done = run("push", "prod", "-C", str(tmp_path))
    assert done.returncode == 2
    assert "skiff.yaml line 3: destination 'prod' is named twice (first on line 2)" in done.stderr


def test_push_without_any_destination_exits_2(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text("build:\n  python_version: '3.11'\n")
    done = run("push", "-C", str(tmp_path))
    assert done.returncode == 2
    assert "no destination: give one" in done.stderr


def test_push_without_argument_goes_to_cog_yaml_model_with_cog_model_tag(
    plain_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real push of the example model, as Cog 0.23 resolves its destination."""
    import shutil

    from support import push_tiny_image

    push_tiny_image(plain_registry, "base/tiny", "1")
    monkeypatch.setenv("SKIFF_BASE_IMAGE", f"{plain_registry.host}/base/tiny:1")
    model = tmp_path / "hello"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "hello", model)
    cog_yaml = model / "cog.yaml"
    cog_yaml.write_text(cog_yaml.read_text() + f"model: {plain_registry.host}/acme/hello\n")
    tagged = run("push", "-C", str(model), "--json", env={"COG_MODEL_TAG": "v7"})
    assert tagged.returncode == 0, tagged.stderr
    assert json.loads(tagged.stdout)["reference"] == f"{plain_registry.host}/acme/hello:v7"
    stamped = run("push", "-C", str(model))  # no tag: Cog's timestamp tag
    assert stamped.returncode == 0, stamped.stderr
    tags = set(plain_registry.tags("acme/hello"))
    assert "v7" in tags and any(re.fullmatch(r"\d{8}T\d{6}Z", t) for t in tags), tags


def test_the_same_destination_twice_is_pushed_once(tmp_path: Path) -> None:
    from skiff.fanout import unique

    write(tmp_path, "destinations:\n  prod: r8.im/acme/sdxl\n")
    named = destinations.resolve("prod", tmp_path)
    assert unique([named, Resolved("R8.im/acme/sdxl"), Resolved("r8.im/acme/other")]) == [
        named,
        Resolved("r8.im/acme/other"),
    ]
