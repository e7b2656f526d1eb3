"""Walking the model folder: exclusions, symlinks, weights vs code, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skiff.errors import InvalidInput
from skiff.image.layers import Entry
from skiff.image.sourcetree import Thresholds, group_weights, plan_source_layers

MiB = 1 << 20


def _paths(entries: list[Entry]) -> list[str]:
    return [e.path for e in entries]


def _write(path: Path, data: bytes | str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_builtin_exclusions_and_dockerignore(tmp_path: Path) -> None:
    for rel in [
        "predict.py",
        ".git/HEAD",
        "sub/.git",
        ".cog/tmp/x",
        "pkg/__pycache__/m.cpython-311.pyc",
        "pkg/m.py",
        "pkg/old.pyc",
        ".venv/bin/python",
        "notes/draft.md",
        "notes/keep.md",
        "out/result.png",
    ]:
        _write(tmp_path / rel)
    _write(tmp_path / ".dockerignore", "# mine\nnotes\n!notes/keep.md\n/out\n")
    plan = plan_source_layers(tmp_path)
    assert _paths(plan.code) == [
        "/src/.dockerignore",
        "/src/notes/keep.md",
        "/src/pkg/m.py",
        "/src/predict.py",
    ]
    assert plan.weights == []


def test_user_can_reinclude_a_builtin_exclusion(tmp_path: Path) -> None:
    _write(tmp_path / ".venv" / "marker")
    _write(tmp_path / ".dockerignore", "!.venv\n")
    assert "/src/.venv/marker" in _paths(plan_source_layers(tmp_path).code)


def test_extra_excludes_and_image_root(tmp_path: Path) -> None:
    _write(tmp_path / "a.py")
    _write(tmp_path / "layout" / "index.json")
    plan = plan_source_layers(tmp_path, image_root="/app", extra_excludes=("layout",))
    assert _paths(plan.code) == ["/app/a.py"]


def test_symlinks_inside_are_kept_and_outside_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside / "secret.txt", "do not ship")
    model = tmp_path / "model"
    _write(model / "predict.py")
    _write(model / "data" / "a.txt")
    (model / "rel.py").symlink_to("predict.py")
    (model / "data" / "up.py").symlink_to("../predict.py")
    (model / "abs.py").symlink_to(model / "predict.py")  # absolute, inside
    (model / "datalink").symlink_to("data")  # a directory link: kept as a link, not walked
    (model / "escape.txt").symlink_to(outside / "secret.txt")
    (model / "escape_dir").symlink_to(outside)
    (model / "dotdot.txt").symlink_to("../outside/secret.txt")
    (model / "dangling").symlink_to("nowhere")

    plan = plan_source_layers(model)
    links = {e.path: e.link for e in plan.code if e.kind == "symlink"}
    assert links == {
        "/src/rel.py": "predict.py",
        "/src/data/up.py": "../predict.py",
        "/src/abs.py": "predict.py",
        "/src/datalink": "data",
        "/src/dangling": "nowhere",
    }
    assert sorted(s.path for s in plan.skipped) == ["dotdot.txt", "escape.txt", "escape_dir"]
    assert all("outside the folder" in s.reason for s in plan.skipped)
    sources = [e.source for e in plan.code if isinstance(e.source, Path)]
    assert all(model in s.parents for s in sources)
    assert not any("secret" in e.path for e in plan.code)


def test_folder_reached_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _write(real / "predict.py")
    (real / "abs.py").symlink_to(real / "predict.py")
    (tmp_path / "alias").symlink_to(real)
    plan = plan_source_layers(tmp_path / "alias")
    assert {e.path: e.link for e in plan.code if e.link} == {"/src/abs.py": "predict.py"}
    assert plan.skipped == []


def test_weights_are_classified_and_grouped(tmp_path: Path) -> None:
    _write(tmp_path / "predict.py", b"#" * (2 * MiB))  # big code stays code
    _write(tmp_path / "tokenizer.json", b"{" * (2 * MiB))  # big data is weights
    _write(tmp_path / "small.safetensors", b"\0" * (100 * 1024))  # weights extension
    _write(tmp_path / "tiny.pt", b"\0" * 10)  # too small to matter
    _write(tmp_path / "config.json", "{}")
    plan = plan_source_layers(tmp_path)
    assert _paths(plan.code) == ["/src/config.json", "/src/predict.py", "/src/tiny.pt"]
    assert [_paths(g) for g in plan.weights] == [["/src/small.safetensors", "/src/tokenizer.json"]]


def test_grouping_is_deterministic_big_files_alone() -> None:
    t = Thresholds(own_layer=100, pack_limit=50)
    files = [
        (Entry.file(f"/src/{n}", b""), size)
        for n, size in [("e", 10), ("a", 200), ("c", 30), ("b", 30), ("d", 5), ("f", 100)]
    ]
    groups = [[e.path for e in g] for g in group_weights(files, t)]
    assert groups == [["/src/a"], ["/src/f"], ["/src/b", "/src/c"], ["/src/d", "/src/e"]]
    assert group_weights(list(reversed(files)), t) == group_weights(files, t)


def test_modes_are_normalised_and_empty_dirs_kept(tmp_path: Path) -> None:
    _write(tmp_path / "run.sh").chmod(0o700)
    _write(tmp_path / "private.py").chmod(0o600)
    (tmp_path / "cache").mkdir()
    modes = {e.path: (e.kind, oct(e.mode)) for e in plan_source_layers(tmp_path).code}
    assert modes == {
        "/src/run.sh": ("file", "0o755"),
        "/src/private.py": ("file", "0o644"),
        "/src/cache": ("dir", "0o755"),
    }


def test_secret_like_files_are_flagged(tmp_path: Path) -> None:
    for rel in [
        ".env",
        ".env.production",
        ".env.example",
        "deploy/id_rsa",
        ".netrc",
        "home/.aws/credentials",
        "predict.py",
    ]:
        _write(tmp_path / rel)
    _write(tmp_path / "tls" / "server.pem", "-----BEGIN RSA PRIVATE KEY-----\n...")
    _write(tmp_path / "tls" / "ca.pem", "-----BEGIN CERTIFICATE-----\n...")
    plan = plan_source_layers(tmp_path)
    assert plan.secret_like == [
        ".env",
        ".env.production",
        ".netrc",
        "deploy/id_rsa",
        "home/.aws/credentials",
        "tls/server.pem",
    ]


def test_special_files_are_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    _write(tmp_path / "a.py")
    plan = plan_source_layers(tmp_path)
    assert _paths(plan.code) == ["/src/a.py"]
    assert [s.path for s in plan.skipped] == ["pipe"]


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        plan_source_layers(tmp_path / "missing")
