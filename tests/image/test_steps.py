"""Build steps: planning, the filesystem diff, and steps run for real in bwrap over Debian."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from skiff import config
from skiff.digest import Digest
from skiff.errors import BuildFailed, InvalidInput
from skiff.image.builder import Builder, BuildOptions
from skiff.image.layers import Layer, StatCache
from skiff.image.layout import Layout, claim_work_dir, release_work_dir
from skiff.image.oci import Manifest
from skiff.image.steps import (
    Sandbox,
    SecretMount,
    Step,
    StepResult,
    StepRunner,
    _binds,
    _remove_placeholders,
    diff,
    is_volatile,
    layer_entries,
    parse_secret,
    plan_steps,
    snapshot,
    step_env,
    step_key,
    system_packages_step,
)
from support.baseimage import python_base_layout

SECRET_VALUE = "tok-7d1f0c2b9a-never-in-a-layer"


# --- planning -------------------------------------------------------------------------------------


def test_parse_secret() -> None:
    assert parse_secret("id=hf,src=/tmp/x") == ("hf", Path("/tmp/x"))
    assert parse_secret("type=file,id=a.b-c,source=rel") == ("a.b-c", Path("rel"))
    for bad in ("hf", "id=hf", "src=/x", "id=,src=/x", "id=a b,src=/x", "id=a,src=/x,color=red"):
        with pytest.raises(InvalidInput, match="secret"):
            parse_secret(bad)


def test_plan_steps_from_cog_yaml(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text(
        "build:\n"
        "  gpu: true\n"
        "  python_version: '3.11'\n"
        '  system_packages: [jq, "libgl1;reboot"]\n'
        "  pre_install: [echo pre]\n"
        "  run:\n"
        "    - echo one\n"
        "    - command: cat /run/secrets/hf\n"
        "      mounts: [{type: secret, id: hf, target: /run/secrets/hf}]\n"
    )
    steps = plan_steps(config.load(tmp_path).build)
    assert [s.role for s in steps] == ["system", "system", "run", "run", "run"]
    assert "python3.11" in steps[0].command
    # Package names are quoted: a name cannot inject a command.
    assert steps[1].command == system_packages_step(["jq", "libgl1;reboot"]).command
    assert "'libgl1;reboot'" in steps[1].command and "--no-install-recommends" in steps[1].command
    assert steps[1].command.endswith("rm -rf /var/lib/apt/lists/*")
    assert [s.command for s in steps[2:4]] == ["echo pre", "echo one"]
    assert steps[4].mounts == (SecretMount("hf", "/run/secrets/hf"),)


@pytest.mark.parametrize("name", ["-o=APT::Get::AllowUnauthenticated=1", "", "jq curl"])
def test_system_package_names_cannot_be_options(name: str) -> None:
    with pytest.raises(InvalidInput, match="is not a package name"):
        system_packages_step(["jq", name])


def test_step_key_covers_parents_command_secret_ids_and_env() -> None:
    step = Step("echo", mounts=(SecretMount("a", "/run/a"),))
    key = step_key(["sha256:1"], step, {"A": "1"})
    assert key == step_key(["sha256:1"], step, {"A": "1"})
    assert key != step_key(["sha256:2"], step, {"A": "1"})
    assert key != step_key(["sha256:1"], Step("echo "), {"A": "1"})
    assert key != step_key(["sha256:1"], Step("echo", mounts=(SecretMount("b", "/run/a"),)), {})
    assert key != step_key(["sha256:1"], step, {"A": "2"})


# --- the diff -------------------------------------------------------------------------------------


def test_diff_added_changed_deleted_and_entries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("etc/keep", "etc/edit", "etc/gone", "old/a/b", "swap/x", "tmp/t", "same"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("1")
    (root / "private").mkdir(mode=0o700)
    before = snapshot(root)
    assert "tmp/t" not in before and "tmp" not in before  # sandbox mount points are never diffed

    (root / "etc/edit").write_text("22")
    (root / "etc/gone").unlink()
    shutil.rmtree(root / "old")
    shutil.rmtree(root / "swap")
    (root / "swap").write_text("now a file")
    (root / "private/new").write_text("n")
    (root / "tmp/t2").write_text("ignored")
    os.symlink("etc/keep", root / "link")
    os.mkfifo(root / "fifo")
    os.chmod(root / "etc", 0o750)
    after = snapshot(root)

    changes = diff(before, after)
    assert changes.added == ["fifo", "link", "private/new"]
    assert changes.changed == ["etc", "etc/edit", "swap"]
    # Children of a removed or replaced directory are covered by their parent's change.
    assert changes.deleted == ["etc/gone", "old"]

    entries = {e.name: e for e in layer_entries(root, changes, after)}
    assert set(entries) == {
        "etc",
        "etc/edit",
        "etc/.wh.gone",
        ".wh.old",
        "swap",
        "link",
        "private",
        "private/new",
    }
    assert entries["private"].mode == 0o700  # a parent keeps its real mode, not a default
    assert entries["etc"].mode == 0o750
    assert entries["etc/.wh.gone"].source == b""
    assert entries["link"].link == "etc/keep"


# --- running steps --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, Manifest]:
    """The debootstrap Debian base (made once per machine), in a build-cache layout."""
    image = python_base_layout()
    layout = Layout.open(tmp_path_factory.mktemp("steps") / "oci")
    for blob in (image.layout / "blobs" / "sha256").iterdir():
        shutil.copyfile(blob, layout.path(Digest(blob.name)))
    return layout, Manifest.from_bytes(image.manifest)


def runner(
    debian: tuple[Layout, Manifest],
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    sandbox: Sandbox | None = None,
    cache: Path | None = None,
) -> StepRunner:
    layout, manifest = debian
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_VALUE + "\n")
    return StepRunner(
        layout,
        StatCache(cache or tmp_path / "step-cache"),
        manifest.layers,
        env=step_env({"PATH": "/usr/bin:/bin"}, env or {"GREETING": "hello"}),
        secrets={"token": secret},
        work_dir=tmp_path / "work",
        sandbox=sandbox,
    )


STEPS = [
    Step(
        'echo "$GREETING" > /greeting && rm /etc/issue.net && mkdir -p /opt/app'
        " && python3 -c 'print(42)' > /opt/app/answer && ln -s answer /opt/app/link"
        ' && test "$(stat -c %a /tmp)" = 1777 && echo $$ > /opt/app/pid',
    ),
    Step(
        'test "$(cat /run/secrets/token)" = \'' + SECRET_VALUE + "'"
        " && test ! -w /run/secrets/token -o $(id -u) = 0"
        " && sha256sum /run/secrets/token | cut -c1-8 > /used-secret",
        mounts=(SecretMount("token", "/run/secrets/token"),),
    ),
]


def layer_members(layout: Layout, layer: Layer) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    with layout.open_blob(layer.descriptor.digest) as blob, tarfile.open(fileobj=blob) as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            out[member.name] = f.read() if f else member.linkname or "dir"
    return out


def all_layer_bytes(layout: Layout, layers: list[Layer]) -> bytes:
    import gzip

    return b"".join(gzip.decompress(layout.read_bytes(x.descriptor.digest)) for x in layers)


@pytest.fixture(scope="module")
def step_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One step cache for the module: unpacking the base costs seconds, so tests share results."""
    return tmp_path_factory.mktemp("step-cache")


def test_steps_run_in_the_sandbox_and_become_layers(
    debian: tuple[Layout, Manifest], tmp_path: Path, step_cache: Path
) -> None:
    layout, _ = debian
    first = runner(debian, tmp_path, cache=step_cache)
    results = first.run(STEPS)
    assert [r.cached for r in results] == [False, False]
    assert first.ran == STEPS

    one = layer_members(layout, results[0].layer)
    assert one["greeting"] == b"hello\n"
    assert one["opt/app/answer"] == b"42\n"
    assert one["opt/app/link"] == "answer"
    assert int(one["opt/app/pid"]) <= 2  # its own PID namespace (bwrap's init is PID 1)
    assert one["etc/.wh.issue.net"] == b""
    two = layer_members(layout, results[1].layer)
    # The secret was there for the step, and neither it nor its mount point is in any layer.
    assert set(two) == {"used-secret"}
    layers = [r.layer for r in results]
    assert SECRET_VALUE.encode() not in all_layer_bytes(layout, layers)
    assert not any("secrets" in name for name in one)
    assert not any((tmp_path / "work").iterdir())  # the unpacked root is gone after the steps
    (tmp_path / "work").rmdir()

    # Same inputs: every step comes from the cache, and nothing is unpacked.
    second = runner(debian, tmp_path, cache=step_cache)
    again = second.run(STEPS)
    assert [r.cached for r in again] == [True, True]
    assert [r.layer for r in again] == layers
    assert second.ran == []
    assert not (tmp_path / "work").exists()


def test_cached_steps_below_are_applied_then_a_failure_reports_output_without_the_secret(
    debian: tuple[Layout, Manifest], tmp_path: Path, step_cache: Path
) -> None:
    """Also runs the chroot sandbox (used as root when bwrap is missing) where it can."""
    layout, _ = debian
    unshare = shutil.which("unshare")
    sandbox = Sandbox("chroot", unshare) if os.geteuid() == 0 and unshare else None
    steps = [
        STEPS[0],  # cached by the test above (or run now): applied before the next step runs
        Step("cat /greeting > /copy && echo $$ > /pid"),
        Step("true"),
        Step(
            "echo working; cat /run/secrets/token; exit 3",
            mounts=(SecretMount("token", "/run/secrets/token"),),
        ),
    ]
    # A killed build's root filesystem (no one holds it), and a running build's (held).
    (tmp_path / "work" / "rootfs-killed" / "root").mkdir(parents=True)
    running = claim_work_dir(tmp_path / "work", "rootfs-running-")
    (running / "root").mkdir()
    for path in (tmp_path / "work" / "rootfs-killed", running):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    done: list[StepResult] = []
    with pytest.raises(BuildFailed, match=r"exit 3") as caught:
        runner(debian, tmp_path, cache=step_cache, sandbox=sandbox).run(steps, done.append)
    assert [r.cached for r in done] == [True, False, False]
    copied = layer_members(layout, done[1].layer)
    assert copied["copy"] == b"hello\n"
    assert int(copied["pid"]) <= 2
    assert done[2].layer.descriptor.media_type.endswith("tar+gzip")
    assert layer_members(layout, done[2].layer) == {}  # nothing changed: an empty layer
    hint = caught.value.hint or ""
    assert "working" in hint and "***" in hint
    assert SECRET_VALUE not in hint + caught.value.message
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()  # nothing left mounted
    # A killed build's root filesystem was cleared; a running build's was not.
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [running.name]
    release_work_dir(running, shutil.rmtree)


def test_missing_secret_is_refused_before_running(
    debian: tuple[Layout, Manifest], tmp_path: Path
) -> None:
    step = Step("true", mounts=(SecretMount("other", "/run/secrets/other"),))
    with pytest.raises(InvalidInput, match="needs the secret"):
        runner(debian, tmp_path).run([step])
    relative = Step("true", mounts=(SecretMount("token", "run/x"),))
    with pytest.raises(InvalidInput, match="absolute"):
        runner(debian, tmp_path).run([relative])


def test_no_sandbox_is_a_build_error_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither bwrap nor unshare can be found
    with pytest.raises(BuildFailed, match="no sandbox") as caught:
        Sandbox.find()
    assert "bubblewrap" in (caught.value.hint or "")
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert Sandbox.find() == Sandbox("bwrap", str(fake))


def test_build_without_a_sandbox_fails_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "cog.yaml").write_text(
        "build:\n  system_packages: [jq]\npredict: predict.py:Predictor\n"
    )
    (model / "predict.py").write_text("class Predictor:\n    pass\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    layout = Layout.open(tmp_path / "oci")
    builder = Builder(model, BuildOptions(), layout=layout)
    with pytest.raises(BuildFailed, match="no sandbox"):
        builder.build()
    assert list(layout.blob_dir.iterdir()) == []  # nothing written, nothing pulled


def test_mount_points_are_resolved_inside_the_root(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A hostile image's /run -> /host/dir symlink must not make skiff touch the host."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # Outside /tmp: inside the image, a path below /tmp is the sandbox's own (refused).
    outside = Path(tempfile.mkdtemp(prefix="skiff-outside-", dir="/var/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(outside))
    os.symlink(str(outside), root / "run")
    secret = tmp_path / "s"
    secret.write_text("x")
    step = Step("true", mounts=(SecretMount("s", "/run/secrets/s"),))
    binds, made = _binds(root, step, {"s": secret})
    inside = root / str(outside).lstrip("/")
    # /etc/resolv.conf (made in the root), then every directory down to the secret's parent
    # (the secret's own mount point lands in a fresh tmpfs), all in the root.
    assert made[0] == root / "etc/resolv.conf"
    assert made[-2:] == [inside, inside / "secrets"]
    assert all(root in p.parents for p in made)
    assert [b.target for b in binds] == ["/etc/resolv.conf", f"{outside}/secrets/s"]
    assert binds[1].tmpfs_parent == f"{outside}/secrets"
    assert list(outside.iterdir()) == []
    (outside / "secrets").mkdir()  # exists on the host: still never removed
    _remove_placeholders(root, made)
    assert (outside / "secrets").is_dir()
    assert not (root / "etc/resolv.conf").exists() and not inside.exists()


def test_mount_points_that_resolve_into_the_sandboxs_own_mounts_are_refused(
    tmp_path: Path,
) -> None:
    """/proc, /dev and /tmp are the sandbox's own (mounted first): a mount point resolved below
    them would be hidden, so resolv.conf is left out and a secret there is refused."""
    root = tmp_path / "root"
    (root / "tmp/x").mkdir(parents=True)
    os.symlink("/tmp/x", root / "etc")
    os.symlink("tmp/x", root / "run")
    secret = tmp_path / "s"
    secret.write_text("x")
    binds, made = _binds(root, Step("true"), {})
    assert binds == []
    _remove_placeholders(root, made)
    assert list((root / "tmp/x").iterdir()) == []
    step = Step("true", mounts=(SecretMount("s", "/run/secrets/s"),))
    with pytest.raises(BuildFailed, match="leads into /proc, /dev or /tmp"):
        _binds(root, step, {"s": secret})


def test_volatile_paths_are_the_caches_logs_and_backups_of_apt_and_dpkg() -> None:
    for rel in (
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/cache/apt/archives/jq_1.6_amd64.deb",
        "var/cache/apt/archives/partial/x.deb",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "var/lib/apt/lists/partial",
        "var/log/apt/history.log",
        "var/log/apt/term.log",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ):
        assert is_volatile(rel), rel
    for rel in (
        "var/lib/dpkg/status",
        "var/lib/dpkg/info/jq.list",
        "var/cache/debconf/config.dat",
        "etc/ld.so.cache",  # the loader reads it: same bytes for the same libraries
        "usr/lib/x86_64-linux-gnu/libjq.so.1",
        "var/log",
        "opt/var/log/dpkg.log",
    ):
        assert not is_volatile(rel), rel


def test_a_step_keeps_hard_links_and_leaves_volatile_files_out(
    debian: tuple[Layout, Manifest], tmp_path: Path
) -> None:
    layout, _ = debian
    step = Step(
        "mkdir -p /opt/dri /var/log/apt /var/lib/apt/lists/partial"
        " && head -c 300000 /dev/urandom > /opt/dri/a_dri.so"
        " && ln /opt/dri/a_dri.so /opt/dri/b_dri.so && ln /opt/dri/a_dri.so /opt/dri/c_dri.so"
        " && date +%s%N > /var/log/apt/history.log && date +%s%N >> /var/log/dpkg.log"
        " && date +%s%N > /var/lib/apt/lists/deb_InRelease"
        " && date +%s%N > /var/lib/dpkg/status-old && touch /kept",
    )
    follow = Step("test ! -e /var/lib/apt/lists/deb_InRelease && test -e /kept && echo ok > /seen")
    results = runner(debian, tmp_path).run([step, follow])
    blob_path = layout.path(results[0].layer.descriptor.digest)
    with tarfile.open(blob_path) as tar:
        members = {m.name: m for m in tar}
    assert members["opt/dri/a_dri.so"].isfile() and members["opt/dri/a_dri.so"].size == 300000
    for name in ("opt/dri/b_dri.so", "opt/dri/c_dri.so"):
        assert members[name].islnk() and members[name].linkname == "opt/dri/a_dri.so"
    assert results[0].layer.descriptor.size < 330000  # the driver once, not three times
    assert "kept" in members
    assert not [n for n in members if is_volatile(n)], sorted(members)
    # The next step ran over a root without what the layer left out (as a fresh unpack).
    assert "seen" in layer_members(layout, results[1].layer)
