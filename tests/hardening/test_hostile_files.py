"""Hostile files: a base image built to reach the host, and a model folder that changes or hides
things while skiff reads it. Real tar layers pushed to a real registry, real `skiff build` with
real bwrap steps, real files, FIFOs and permissions."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hardutil import SKIFF, make_model, skiff

from skiff.errors import BuildFailed
from skiff.image.layers import StatCache, build_layer
from skiff.image.layout import Layout
from skiff.image.oci import Descriptor
from skiff.image.sourcetree import plan_source_layers
from skiff.image.steps import Sandbox, SecretMount, Step, StepRunner, step_env
from support import RegistryServer, TinyImage, skopeo_push
from support.registries import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

# --- a base image of our own making ------------------------------------------------------------


@dataclass
class M:
    """One tar member: kind is file | dir | sym | link."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    mode: int = 0o644


_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE}
_KINDS["link"] = tarfile.LNKTYPE


def layer_tar(members: list[M]) -> bytes:
    """The members in the order given (a hostile layer's order matters), not sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime, info.linkname = _KINDS[m.kind], m.mode, 0, m.link
            info.size = len(m.data)
            tar.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_base(registry: RegistryServer, repo: str, layers: list[list[M]], scratch: Path) -> str:
    """An image of ``layers`` (each a list of members) with busybox as its shell, pushed with
    skopeo; returns its reference."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    shell = [M("bin/", "dir", mode=0o755), M("bin/busybox", data=busybox, mode=0o755)]
    shell.append(M("bin/sh", "sym", link="busybox"))
    tars = [layer_tar(shell + layers[0])] + [layer_tar(x) for x in layers[1:]]
    blobs = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(t) for t in tars]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": _sha256(b), "size": len(b)} for b in blobs
            ],
        }
    ).encode()
    layout = scratch / "hostile-layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for blob in (*blobs, config, manifest):
        (layout / "blobs" / "sha256" / _sha256(blob)[7:]).write_bytes(blob)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    image = TinyImage(layout, manifest, _sha256(manifest), _sha256(config), _sha256(blobs[0]))
    skopeo_push(image, registry, repo, "1")
    return f"{registry.host}/{repo}:1"


def host_state(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``path`` with its mode, mtime and content: what must not change."""
    state = {}
    for item in sorted(path.rglob("*")):
        st = item.lstat()
        data = item.read_bytes() if item.is_file() and not item.is_symlink() else b""
        state[str(item.relative_to(path))] = (st.st_mode, st.st_mtime_ns, data)
    return state


def model_with_steps(parent: Path) -> Path:
    model = make_model(parent)
    (model / "cog.yaml").write_text(
        "build:\n"
        '  python_version: "3.11"\n'
        "  run:\n"
        "    - echo built > /built\n"
        "    - command: test -s /run/secrets/tok && echo used > /used\n"
        "      mounts: [{type: secret, id: tok, target: /run/secrets/tok}]\n"
        'predict: "predict.py:Predictor"\n'
    )
    return model


# --- the base image -----------------------------------------------------------------------------


def test_a_hostile_base_image_changes_nothing_on_the_host(
    plain_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a layer can name a host path: a directory entry followed by a symlink of the
    same name (its mode and time were applied through the link: a root-owned file became
    -rwsrwsrwx), absolute and `..`-climbing targets, a hard link to such a symlink, a whiteout
    and writes through a lower layer's symlink; then build steps run over it."""
    host = tmp_path / "host"
    host.mkdir()
    victim = host / "victim"
    victim.write_text("original")
    victim.chmod(0o644)
    os.utime(victim, ns=(10**18, 10**18))
    climb = "../" * 12 + str(victim).lstrip("/")
    ref = push_base(
        plain_registry,
        "hostile/unpack",
        [
            [
                M("evil/", "dir", mode=0o6777),
                M("evil", "sym", link=str(victim)),
                M("climb/", "dir", mode=0o6777),
                M("climb", "sym", link=climb),
                M("hard", "link", link="evil"),
                M("hostdir", "sym", link=str(host)),
            ],
            [
                M("hostdir/.wh.victim"),
                M("hostdir/new", data=b"pwned"),
                M("evil/", "dir", mode=0o777),
            ],
        ],
        tmp_path,
    )
    before = host_state(host)
    monkeypatch.setenv("SKIFF_BASE_IMAGE", ref)
    secret = tmp_path / "tok.txt"
    secret.write_text("token\n")
    model = model_with_steps(tmp_path)
    built = skiff("build", "-C", str(model), "--secret", f"id=tok,src={secret}")
    assert built.returncode == 0, built.stdout + built.stderr
    assert host_state(host) == before
    assert oct(victim.stat().st_mode) == oct(0o100644)


@pytest.mark.parametrize("link", ["etc", "tmp", "proc", "run"])
def test_the_step_sandbox_creates_nothing_outside_the_root(
    link: str, plain_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While bwrap sets up, the host is at /oldroot: an image whose /etc (or /tmp, /proc, /run)
    climbs there made it create its mount points on the host (an empty resolv.conf, the
    directories of a secret's mount point), or fail the build."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("x")
    up = "../" * 4 + "oldroot" + str(host)
    # The host folder's path inside the image too: resolved inside the root, the mount points
    # find their parents, so the build goes as far as it can.
    parents = [
        M("/".join(["oldroot", *host.parts[1 : i + 1]]) + "/", "dir", mode=0o755)
        for i in range(len(host.parts))
    ]
    targets = {
        "etc": up,
        "tmp": f"../oldroot{host}/tmp-made",
        "proc": f"/oldroot{host}/proc-made",
        "run": f"{up}/run",
    }
    layer = [*parents, M(link, "sym", link=targets[link])]
    ref = push_base(plain_registry, f"hostile/{link}", [layer], tmp_path)
    monkeypatch.setenv("SKIFF_BASE_IMAGE", ref)
    secret = tmp_path / "tok.txt"
    secret.write_text("token\n")
    model = model_with_steps(tmp_path)
    before = host_state(host)
    built = skiff("build", "-C", str(model), "--secret", f"id=tok,src={secret}")
    assert host_state(host) == before  # no resolv.conf, tmp-made, proc-made, run/secrets
    assert built.returncode == 0, built.stdout + built.stderr
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()


# --- the model folder ---------------------------------------------------------------------------


def layer_names(registry: RegistryServer, digest: str) -> dict[bytes, bytes]:
    """Raw tar name (bytes, as another tool reads it) -> content of every file of an image."""
    manifest = json.loads(registry.blob_bytes(digest))
    files: dict[bytes, bytes] = {}
    for layer in manifest["layers"]:
        data = registry.blob_bytes(layer["digest"])
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    files[os.fsencode(member.name)] = handle.read()
    return files


def test_a_file_name_that_is_not_utf8_goes_into_the_image_byte_for_byte(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Linux names are bytes: a Latin-1 name (from an old archive, a Windows share) is the
    user's file like any other. It used to end the build with exit 1 (UnicodeEncodeError)."""
    model = make_model(tmp_path)
    name = b"caf\xe9-latin1.txt"
    (model / "data").mkdir()
    with open(os.path.join(os.fsencode(model / "data"), name), "wb") as f:
        f.write(b"ol\xe9\n")
    # One more that skiff leaves out and must name in a warning: a link out of the folder.
    os.symlink("/etc/hostname", os.path.join(os.fsencode(model / "data"), b"out-\xff"))
    pushed = skiff("push", "--json", f"{registry.host}/demo/names:v1", "-C", str(model))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    warnings = json.loads(pushed.stdout)["warnings"]
    assert any(w.startswith("left out data/out-") for w in warnings), warnings
    human = skiff("build", "-C", str(model))
    assert human.returncode == 0, human.stdout + human.stderr
    assert "left out data/out-\\udcff" in human.stderr  # escaped, never a crash
    files = layer_names(registry, json.loads(pushed.stdout)["digest"])
    assert files[b"src/data/" + name] == b"ol\xe9\n"
    # The same folder again: the same image (the stat cache keys such names too).
    again = skiff("push", "--json", f"{registry.host}/demo/names:v2", "-C", str(model))
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["digest"] == json.loads(pushed.stdout)["digest"]


def _swap(path: Path, how: str, outside: Path) -> None:
    """What can take the place of a scanned file before its layer is written."""
    if how == "symlink":
        path.unlink()
        path.symlink_to(outside / "secret.txt")
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "other-file":
        replacement = path.with_name(".new")
        replacement.write_text("print('replaced')\n")
        replacement.replace(path)
    else:  # the folder above it becomes a link to a folder holding a file of the same name
        shutil.copy(path, outside / path.name)
        shutil.rmtree(path.parent)
        path.parent.symlink_to(outside)


@pytest.mark.parametrize("how", ["symlink", "fifo", "other-file", "parent-folder"])
def test_a_file_swapped_after_the_scan_is_a_build_error_never_outside_content_or_a_hang(
    how: str, tmp_path: Path
) -> None:
    model, outside = tmp_path / "model", tmp_path / "outside"
    (model / "pkg").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-content-7f3a")
    (model / "pkg" / "code.py").write_text("print('scanned')\n")
    plan = plan_source_layers(model)
    _swap(model / "pkg" / "code.py", how, outside)
    layout = Layout.open(tmp_path / "oci")
    caught: list[BaseException] = []

    def build() -> None:
        try:
            build_layer(plan.code, layout, "gzip", stat_cache=StatCache(tmp_path / "stat"))
        except BaseException as exc:  # handed to the test thread
            caught.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the build hangs on the swapped file"
    assert len(caught) == 1 and isinstance(caught[0], BuildFailed), caught
    assert "changed while skiff was building" in caught[0].message
    assert "pkg/code.py" in caught[0].message
    assert list(layout.blob_dir.iterdir()) == []  # no layer committed, none with that content


def _unprivileged() -> list[str]:
    """A prefix that makes file permissions apply to this test's own skiff, root or not: root
    reads anything (CAP_DAC_OVERRIDE), so as root the run drops those two capabilities."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("what", ["folder", "file"])
def test_an_unreadable_folder_or_file_fails_the_build_naming_it_and_the_fix(
    what: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """Both used to differ: a folder that cannot be listed was only a warning (its files
    silently missing from the image), a file that cannot be read failed the build."""
    model = make_model(tmp_path)
    locked = model / "data"
    locked.mkdir()
    (locked / "table.csv").write_text("a,b\n")
    target = locked if what == "folder" else locked / "table.csv"
    target.chmod(0)
    try:
        run = subprocess.run(
            [*_unprivileged(), str(SKIFF), "build", "-C", str(model)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        target.chmod(0o755)
    assert run.returncode == 4, run.stdout + run.stderr
    said = " ".join(run.stderr.split())
    assert f"error: cannot read the {what} {target}: permission denied" in said
    assert "fix: make it readable (chmod -R u+rX" in said and ".dockerignore" in said
    assert "Traceback" not in run.stderr

    # Left out with .dockerignore, it is no error at all.
    (model / ".dockerignore").write_text("data\n")
    target.chmod(0)
    try:
        run = subprocess.run(
            [*_unprivileged(), str(SKIFF), "build", "-C", str(model)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        target.chmod(0o755)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture
def host() -> Iterator[Path]:
    """A host folder outside /tmp: the sandbox mounts its own /tmp, which would hide the
    folder's path inside the image (skiff refuses mount points there: see test_steps)."""
    folder = Path(tempfile.mkdtemp(prefix="skiff-host-", dir="/var/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _sandboxes() -> list[Sandbox]:
    """bwrap, and the chroot used as root where bwrap is missing (only root can run it)."""
    found = [Sandbox("bwrap", shutil.which("bwrap") or "bwrap")]
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare:
        found.append(Sandbox("chroot", unshare))
    return found


@pytest.mark.parametrize("sandbox", _sandboxes(), ids=lambda s: s.kind)
@pytest.mark.parametrize("style", ["absolute", "oldroot"])
def test_no_sandbox_creates_mount_points_through_the_images_links(
    sandbox: Sandbox, style: str, tmp_path: Path, host: Path
) -> None:
    """The same image links, straight to the step runner, for both sandboxes: the chroot sees
    the host as it is (an absolute link names a host path), bwrap at /oldroot."""
    (host / "keep").write_text("x")
    prefix = str(host) if style == "absolute" else "../../../../oldroot" + str(host)
    parents = [
        M(
            "/".join([*(["oldroot"] if style == "oldroot" else []), *host.parts[1 : i + 1]]) + "/",
            "dir",
            mode=0o755,
        )
        for i in range(len(host.parts))
    ]
    links = [M(name, "sym", link=f"{prefix}/{name}-made") for name in ("tmp", "proc", "run")]
    layers = [
        layer_tar(
            [
                M("bin/", "dir", mode=0o755),
                M("bin/busybox", data=_busybox(), mode=0o755),
                M("bin/sh", "sym", link="busybox"),
                *parents,
                M(f"{parents[-1].name}etc-made/", "dir", mode=0o755),
                M("etc", "sym", link=f"{prefix}/etc-made"),
                *links,
            ]
        )
    ]
    layout = Layout.open(tmp_path / "oci")
    descriptors = []
    for tar in layers:
        blob = gzip.compress(tar, mtime=0)
        descriptors.append(Descriptor(OCI_LAYER_GZIP, layout.write_bytes(blob), len(blob)))
    secret = tmp_path / "tok.txt"
    secret.write_text("token\n")
    runner = StepRunner(
        layout,
        StatCache(tmp_path / "steps"),
        descriptors,
        env=step_env({"PATH": "/bin"}, {}),
        secrets={"tok": secret},
        work_dir=tmp_path / "work",
        sandbox=sandbox,
    )
    before = host_state(host)
    runner.run(
        [
            # The host's DNS settings were mounted, at the image's /etc resolved inside it.
            Step("echo built > /built && test -e /etc/resolv.conf"),
            Step("test -s /run/secrets/tok", mounts=(SecretMount("tok", "/run/secrets/tok"),)),
        ]
    )
    assert host_state(host) == before
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()


def _busybox() -> bytes:
    return Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
