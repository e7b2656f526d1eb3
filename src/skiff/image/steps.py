"""Build steps (``system_packages``, ``build.run``) run in a sandbox, each turned into a layer.

The way daemonless builders do it: the base image (and the layers of earlier steps) are unpacked
into a root filesystem in the cache; the step runs there in a sandbox — ``bwrap`` with ``/proc``,
a fresh ``/dev``, a tmpfs ``/tmp``, its own PID namespace, the host's network and DNS settings
(read-only) and the build's environment; or, where bwrap is missing and skiff runs as root, a
chroot in private mount and PID namespaces. The root filesystem is compared with a snapshot
taken before the step: what was added or changed becomes the layer, what was deleted becomes a
whiteout. Layers are reproducible tars (``layers.build_layer``): sorted, mtime 0, owner 0.

A secret (``mounts: [{type: secret, id, target}]`` in cog.yaml, ``--secret id=ID,src=FILE`` on the
command line) is bind-mounted read-only at its target for that one step: its content is never
copied into the root filesystem, and its placeholder mount point is removed before the diff.

A base image is untrusted: it is unpacked without following any of its symlinks
(``rootfs.py``), and the sandbox is never left to resolve a path through them. While bwrap sets
up, the host is visible to it (at ``/oldroot``), so every mount point (``resolv.conf``, a
secret's target, ``/proc``, ``/dev``, ``/tmp``) is made by skiff inside the root first, resolved
as a chroot would, and bwrap is given that resolved path: it follows and creates nothing.

Each step's layer is cached under a key made of the layers below it, the command, the secret ids
(not their contents) and the environment: a step whose inputs did not change is not run again,
and no root filesystem is unpacked when every step is cached.

Known differences from a Docker build: file owners are not kept in step layers (everything is
root's, as the layer format here has no owners); a file rewritten with the same bytes still
appears in the layer (its stat changed); ``/proc``, ``/sys``, ``/dev`` and ``/tmp`` are never part
of a layer.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skiff.config import BuildConfig
from skiff.errors import BuildFailed, InvalidInput
from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import Layout, claim_work_dir, release_work_dir, remove_abandoned
from skiff.image.oci import Descriptor, canonical_json
from skiff.image.rootfs import (
    WHITEOUT_PREFIX,
    apply_layer,
    existing_prefix,
    make_mount_point,
    remove_inside,
    remove_mount_points,
    remove_path,
    resolve_dir,
    unpack_layers,
)

_KEY_VERSION = 1
# Mount points the sandbox provides: whatever happens under them is not the step's output.
EXCLUDED_TOP = frozenset({"proc", "sys", "dev", "tmp"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_OUTPUT_TAIL = 30
_SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")

# What a build step leaves behind that is not image content: apt's and dpkg's caches, logs and
# backups. Each differs from one build to the next (times, inode numbers, the order apt met the
# lists in) or is only of use on the machine that ran the step, so keeping any of them would give
# the same cog.yaml another layer digest on every machine (and every CI run would upload the
# layer again). Found by running the same apt step twice from empty caches and comparing the
# layers. Left out of every step layer, and removed from the root filesystem when the step made
# them (a later step sees what a fresh unpack of the layers gives). Patterns are fnmatch's,
# relative to the root (``*`` crosses ``/``).
VOLATILE_PATHS = (
    "var/cache/apt/*.bin",  # apt's binary caches (pkgcache, srcpkgcache): differ every build
    "var/cache/apt/archives/*.deb",  # the downloaded packages (already unpacked)
    "var/cache/apt/archives/partial/*",
    "var/lib/apt/lists/*",  # the package lists: `apt-get update` fetches them again
    "var/log/apt/*",  # history.log, term.log, eipp.log.xz: dated
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",  # ldconfig's stat cache (inode numbers, times)
    "var/lib/dpkg/*-old",  # dpkg's backups: status-old, available-old, diversions-old...
    "var/cache/debconf/*-old",  # debconf's: config.dat-old, templates.dat-old
)


def is_volatile(rel: str) -> bool:
    """True for a path (relative to the root) that is left out of step layers."""
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in VOLATILE_PATHS)


StepRole = Literal["system", "run"]


# --- what to run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretMount:
    """A secret the step reads at ``target`` (an absolute path in the image)."""

    id: str
    target: str


@dataclass(frozen=True)
class Step:
    command: str
    role: StepRole = "run"
    mounts: tuple[SecretMount, ...] = ()

    @property
    def title(self) -> str:
        first = self.command.strip().splitlines()[0] if self.command.strip() else ""
        return first if len(first) <= 70 else first[:67] + "..."


def system_packages_step(packages: Sequence[str]) -> Step:
    """One apt step for all packages, with apt's lists removed in the same step (smaller layer)."""
    for package in packages:
        # Quoting keeps a name from being a shell command; this keeps it from being an apt option.
        if not package or package.startswith("-") or any(c.isspace() for c in package):
            raise InvalidInput(
                f"build.system_packages: {package!r} is not a package name",
                "list Debian/Ubuntu package names, e.g. ffmpeg or libgl1",
            )
    names = " ".join(shlex.quote(p) for p in packages)
    return Step(
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
        f"{names} && rm -rf /var/lib/apt/lists/*",
        "system",
    )


def python_step(python_version: str) -> Step:
    """Makes ``python3`` the given version (for GPU bases, see ``gpu.py``): installed from the
    distribution's archive if missing. Does nothing on a base that already has it."""
    py = ".".join(python_version.split(".")[:2])
    check = "import sys; print('%d.%d' % sys.version_info[:2])"
    command = (
        f"if ! command -v python{py} >/dev/null 2>&1; then"
        f" apt-get update -qq && apt-get install -y -qq --no-install-recommends python{py}"
        " && rm -rf /var/lib/apt/lists/*; fi"
        f' && if [ "$(python3 -c "{check}" 2>/dev/null)" != "{py}" ]; then'
        f' ln -sf "$(command -v python{py})" /usr/local/bin/python3; fi'
    )
    return Step(command, "system")


def plan_steps(build: BuildConfig) -> list[Step]:
    """The steps cog.yaml's ``build`` asks for, in order: Python for a GPU base, the system
    packages (one apt step), then ``pre_install`` (Cog's older name) and ``run``, one step each."""
    steps: list[Step] = []
    if build.gpu:
        steps.append(python_step(build.python_version))
    if build.system_packages:
        steps.append(system_packages_step(build.system_packages))
    steps += [Step(command) for command in build.pre_install]
    for run in build.run:
        mounts = tuple(SecretMount(m.id, m.target) for m in run.mounts)
        steps.append(Step(run.command, "run", mounts))
    return steps


def parse_secret(text: str) -> tuple[str, Path]:
    """``id=ID,src=FILE`` (Docker's ``--secret`` syntax; ``source=`` also accepted)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidInput(f"invalid --secret {part!r}", "write it as --secret id=ID,src=FILE")
        fields[key.strip()] = value
    secret_id = fields.pop("id", "")
    source = fields.pop("src", None) or fields.pop("source", None)
    fields.pop("type", None)
    if not secret_id or not source or fields:
        raise InvalidInput(
            f"invalid --secret {text.split(',')[0]}...", "write it as --secret id=ID,src=FILE"
        )
    if not _SECRET_ID.match(secret_id):
        raise InvalidInput(f"invalid secret id {secret_id!r}", "use letters, digits, '.', '_', '-'")
    return secret_id, Path(source).expanduser()


def check_secrets(steps: Sequence[Step], secrets: Mapping[str, Path]) -> None:
    """Every secret a step mounts was given, and its file is readable (before any work starts)."""
    for step in steps:
        for mount in step.mounts:
            if not mount.target.startswith("/") or ".." in mount.target.split("/"):
                raise InvalidInput(
                    f"secret {mount.id!r}: target {mount.target!r} must be an absolute path",
                    "e.g. target: /run/secrets/" + mount.id,
                )
            source = secrets.get(mount.id)
            if source is None:
                raise InvalidInput(
                    f"the build step {step.title!r} needs the secret {mount.id!r}",
                    f"pass it with --secret id={mount.id},src=FILE",
                )
            if not source.is_file() or not os.access(source, os.R_OK):
                raise InvalidInput(
                    f"the secret {mount.id!r} file {source} is not a readable file",
                    "check the src= path of --secret",
                )


# --- the sandbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    kind: Literal["bwrap", "chroot"]
    program: str

    @classmethod
    def find(cls) -> Sandbox:
        """bwrap if installed, else a chroot when running as root on Linux; else BuildFailed."""
        if not sys.platform.startswith("linux"):
            raise BuildFailed(
                "this model has build steps (system_packages or run), which skiff can only run"
                " on Linux",
                "build it on a Linux machine or in a Linux CI job; pure-Python models build"
                " anywhere",
            )
        found = shutil.which("bwrap")
        if found:
            return cls("bwrap", found)
        unshare = shutil.which("unshare")
        if os.geteuid() == 0 and unshare and shutil.which("chroot"):
            return cls("chroot", unshare)
        raise BuildFailed(
            "this model has build steps (system_packages or run) and no sandbox to run them",
            "install bubblewrap (apt-get install bubblewrap, dnf install bubblewrap),"
            " or run skiff as root",
        )


@dataclass(frozen=True)
class _Bind:
    source: Path
    target: str  # absolute, in the image, no symlink on the way: the sandbox follows nothing
    tmpfs_parent: str | None  # a fresh tmpfs to hold the mount point, when its parent is new


# Where the sandbox mounts /proc, a fresh /dev and a tmpfs /tmp.
_SANDBOX_DIRS = ("proc", "dev", "tmp")
_APT_ROOTLESS = b'APT::Sandbox::User "root";\n'
_APT_CONF_DIR = "/etc/apt/apt.conf.d"


def _sandbox_dirs(root: Path) -> None:
    """Makes /proc, /dev and /tmp real directories of the root: a hostile image's symlink there
    (``/tmp -> /oldroot/...``, as the sandbox sees the host while it sets up) would make the
    sandbox create its mount point on the host. They are never part of a layer."""
    for name in _SANDBOX_DIRS:
        if make_mount_point(root, name, directory=True) is None:
            remove_path(root / name)  # the root is skiff's own folder; the name is not followed
            make_mount_point(root, name, directory=True)


def _under_sandbox_dirs(target: str) -> bool:
    # The sandbox mounts its own /proc, /dev and /tmp first: a mount point resolved below them
    # (through the image's links) would be hidden by those mounts.
    return target.split("/")[1] in _SANDBOX_DIRS


def _binds(
    root: Path, step: Step, secrets: Mapping[str, Path], apt_rootless: Path | None = None
) -> tuple[list[_Bind], list[Path]]:
    """The read-only mounts of a step, and the mount points made for them (to remove after).

    Every mount point is made here, resolved inside the root (``make_mount_point``), and the
    sandbox is given that resolved path: through a hostile image's symlinks (``/etc -> a link
    climbing out``) it would otherwise create its mount points on the host.
    """
    binds: list[_Bind] = []
    made: list[Path] = []
    conf_dir, missing = existing_prefix(root, _APT_CONF_DIR)
    if apt_rootless is not None and not missing and conf_dir.is_dir() and not conf_dir.is_symlink():
        # Without root, the sandbox maps one user only: apt cannot switch to its _apt user to
        # download, so it is told not to (the sandbox already isolates it). Mounted, not written.
        point = make_mount_point(root, f"{_APT_CONF_DIR}/00-skiff-rootless", directory=False)
        if point is not None:
            made += point.created
            binds.append(_Bind(apt_rootless, point.target, None))
    # apt needs DNS: the host's settings, read-only, unless the image's file is a symlink or not
    # a file, or there is no /etc.
    _, missing = existing_prefix(root, "/etc/resolv.conf")
    if Path("/etc/resolv.conf").exists() and len(missing) <= 1:
        point = make_mount_point(root, "/etc/resolv.conf", directory=False)
        if point is not None:
            made += point.created
            if not _under_sandbox_dirs(point.target):
                binds.append(_Bind(Path("/etc/resolv.conf"), point.target, None))
    for mount in step.mounts:
        target = posixpath.normpath(mount.target)
        parent = posixpath.dirname(target)
        try:
            resolve_dir(root, parent)
            fresh = False
        except (FileNotFoundError, NotADirectoryError):
            fresh = True
        point = make_mount_point(root, target, directory=False, make_last=not fresh)
        if point is not None:
            made += point.created
        if point is None or _under_sandbox_dirs(point.target):
            raise BuildFailed(
                f"cannot mount the secret {mount.id!r} at {target}: in the image, that path is"
                " a symlink or a folder, lies below a file, or leads into /proc, /dev or /tmp",
                "choose another target for the secret in cog.yaml, e.g. /run/secrets/" + mount.id,
            )
        tmpfs = posixpath.dirname(point.target) if fresh else None
        binds.append(_Bind(secrets[mount.id], point.target, tmpfs))
    return binds, made


def _remove_placeholders(root: Path, paths: Sequence[Path]) -> None:
    # Only empty files and directories, and never through a symlink the step may have put on
    # the way: anything else is the step's own output.
    remove_mount_points(root, paths)


def _bwrap_args(sandbox: Sandbox, root: Path, binds: Sequence[_Bind], command: str) -> list[str]:
    args = [sandbox.program, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev"]
    # /tmp world-writable and sticky, as on any system: apt writes there as its _apt user.
    args += ["--perms", "1777", "--tmpfs", "/tmp", "--unshare-pid", "--die-with-parent"]
    if os.geteuid() != 0:
        # apt and dpkg want to be root: a user namespace maps the user to root for the step.
        args += ["--unshare-user", "--uid", "0", "--gid", "0"]
    for bind in binds:
        if bind.tmpfs_parent:
            args += ["--tmpfs", bind.tmpfs_parent]
        args += ["--ro-bind", str(bind.source), bind.target]
    return [*args, "--chdir", "/", "/bin/sh", "-c", command]


def _host_tool(name: str) -> str:
    # The script runs with the step's environment (its PATH is the image's): host tools by path.
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + DEFAULT_PATH) or name


def _chroot_args(sandbox: Sandbox, root: Path, binds: Sequence[_Bind], command: str) -> list[str]:
    """unshare + mount + chroot: the same view as bwrap, for root without bwrap."""
    q = shlex.quote
    r = q(str(root))
    mount, mkdir, chroot = (q(_host_tool(t)) for t in ("mount", "mkdir", "chroot"))
    lines = [
        "set -e",
        f"{mkdir} -p {r}/proc {r}/dev {r}/tmp",
        f"{mount} -t proc proc {r}/proc",
        f"{mount} --rbind /dev {r}/dev",
        f"{mount} -t tmpfs -o mode=1777 tmpfs {r}/tmp",
    ]
    for bind in binds:
        target = q(str(root) + bind.target)
        if bind.tmpfs_parent:
            parent = q(str(root) + bind.tmpfs_parent)
            lines += [f"{mkdir} -p {parent}", f"{mount} -t tmpfs tmpfs {parent}"]
        lines += [
            f"[ -e {target} ] || : > {target}",
            f"{mount} --bind {q(str(bind.source))} {target}",
            f"{mount} -o remount,bind,ro {target}",
        ]
    lines.append(f"exec {chroot} {r} /bin/sh -c {q(command)}")
    script = "\n".join(lines)
    unshare = [sandbox.program, "--mount", "--pid", "--fork", "--propagation", "private"]
    return [*unshare, "/bin/sh", "-c", script]


# --- snapshot and diff ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileState:
    kind: Literal["file", "dir", "symlink", "other"]
    mode: int
    size: int
    mtime_ns: int
    inode: int
    link: str | None = None
    device: int = 0
    nlink: int = 1


def snapshot(root: Path) -> dict[str, FileState]:
    """Every path under ``root`` (relative, ``/``-separated) and its stat, symlinks not followed."""
    states: dict[str, FileState] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not rel_dir and entry.name in EXCLUDED_TOP:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            link = None
            if stat.S_ISDIR(mode):
                kind: Literal["file", "dir", "symlink", "other"] = "dir"
                stack.append(rel)
            elif stat.S_ISREG(mode):
                kind = "file"
            elif stat.S_ISLNK(mode):
                kind = "symlink"
                link = os.readlink(entry.path)
            else:
                kind = "other"
            states[rel] = FileState(
                kind,
                stat.S_IMODE(mode),
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                link,
                st.st_dev,
                st.st_nlink,
            )
    return states


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Added or changed, but left out of the layer (``VOLATILE_PATHS``).
    volatile: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.deleted)


def _differs(old: FileState, new: FileState) -> bool:
    if old.kind != new.kind or old.mode != new.mode:
        return True
    if new.kind == "dir":
        return False  # a directory's mtime moves with its entries, which are compared themselves
    return (old.size, old.mtime_ns, old.inode, old.link) != (
        new.size,
        new.mtime_ns,
        new.inode,
        new.link,
    )


def diff(before: Mapping[str, FileState], after: Mapping[str, FileState]) -> Changes:
    """Added, changed and deleted paths. A deletion is listed only where its parent directory
    is a directory on both sides (else the parent's own change or deletion covers it)."""
    changes = Changes()
    for rel, new in after.items():
        old = before.get(rel)
        if old is not None and not _differs(old, new):
            continue
        if is_volatile(rel):
            changes.volatile.append(rel)
        elif old is None:
            changes.added.append(rel)
        else:
            changes.changed.append(rel)
    for rel in before:
        if rel in after:
            continue
        parent = posixpath.dirname(rel)
        if not parent or (
            before[parent].kind == "dir" and parent in after and after[parent].kind == "dir"
        ):
            changes.deleted.append(rel)
    for items in (changes.added, changes.changed, changes.deleted, changes.volatile):
        items.sort()
    return changes


def layer_entries(root: Path, changes: Changes, after: Mapping[str, FileState]) -> list[Entry]:
    """The layer for ``changes``: files read from ``root``; parents with their real modes.

    Files that are one inode under several names in the layer (mesa's drivers, say) are stored
    once, the other names as hard links to the first in the layer's order.
    """
    entries: dict[str, Entry] = {}
    first_name: dict[tuple[int, int], str] = {}
    for rel in sorted(changes.added + changes.changed, key=lambda r: r.split("/")):
        state = after[rel]
        if state.kind == "file" and state.nlink > 1:
            first_name.setdefault((state.device, state.inode), rel)

    def add_parents(rel: str) -> None:
        parent = posixpath.dirname(rel)
        while parent and parent not in entries:
            entries[parent] = Entry.dir("/" + parent, after[parent].mode)
            parent = posixpath.dirname(parent)

    for rel in changes.added + changes.changed:
        state = after[rel]
        if state.kind == "dir":
            entries[rel] = Entry.dir("/" + rel, state.mode)
        elif state.kind == "file":
            # Read only if still the file the snapshot saw: never through a link put in its place.
            identity = (state.device, state.inode)
            target = first_name.get(identity, rel)
            if target != rel:
                entries[rel] = Entry.hard_link("/" + rel, "/" + target, state.mode)
            else:
                entries[rel] = Entry.file("/" + rel, root / rel, state.mode, identity=identity)
        elif state.kind == "symlink":
            entries[rel] = Entry.symlink("/" + rel, state.link or "")
        else:
            continue  # sockets and fifos a step left behind are not image content
        add_parents(rel)
    for rel in changes.deleted:
        parent, name = posixpath.split(rel)
        whiteout = posixpath.join(parent, WHITEOUT_PREFIX + name)
        entries[whiteout] = Entry.file("/" + whiteout, b"", 0o644)
        add_parents(whiteout)
    return list(entries.values())


# --- running steps, with the cache ----------------------------------------------------------------


def step_key(parents: Sequence[str], step: Step, env: Mapping[str, str]) -> str:
    """The cache key of a step: what is below it, what it runs, with which secrets and env."""
    mounts = sorted([m.id, m.target] for m in step.mounts)
    material = [_KEY_VERSION, list(parents), step.command, mounts, sorted(env.items())]
    return "step-" + hashlib.sha256(canonical_json(material)).hexdigest()


@dataclass(frozen=True)
class StepResult:
    step: Step
    layer: Layer
    cached: bool


class StepRunner:
    """Runs steps in order over a base image, each one's result cached by ``step_key``.

    ``env`` is the whole environment a step sees (the base image's and cog.yaml's variables);
    ``secrets`` maps secret ids to files. ``work_dir`` holds the unpacked root filesystem while
    steps run (same filesystem as the cache: a CUDA base is several GB).
    """

    def __init__(
        self,
        layout: Layout,
        cache: StatCache,
        base_layers: Sequence[Descriptor],
        *,
        env: Mapping[str, str],
        secrets: Mapping[str, Path] | None = None,
        work_dir: Path,
        sandbox: Sandbox | None = None,
        on_status: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.layout = layout
        self.cache = cache
        self.base_layers = list(base_layers)
        self.env = dict(env)
        self.secrets = dict(secrets or {})
        self.work_dir = work_dir
        self._sandbox = sandbox
        self.status = on_status
        self.ran: list[Step] = []  # steps actually executed (not cached), for logs and tests

    def run(
        self, steps: Sequence[Step], on_result: Callable[[StepResult], None] = lambda _r: None
    ) -> list[StepResult]:
        check_secrets(steps, self.secrets)
        chain = [str(d.digest) for d in self.base_layers]
        results: list[StepResult] = []
        root: Path | None = None
        try:
            for number, step in enumerate(steps, 1):
                key = step_key(chain, step, self.env)
                label = f"step {number}/{len(steps)}: {step.title}"
                layer = self.cache.get(key, self.layout)
                if layer is not None:
                    self.status(f"{label} (cached)")
                    if root is not None:
                        with self.layout.open_blob(layer.descriptor.digest) as blob:
                            apply_layer(blob, root)
                    result = StepResult(step, layer, cached=True)
                else:
                    sandbox = self._sandbox or Sandbox.find()
                    if root is None:
                        self.status("unpacking the base image for the build steps")
                        root = self._unpack([r.layer.descriptor for r in results])
                    self.status(label)
                    layer = self._execute(sandbox, root, step)
                    self.cache.put(key, layer)
                    self.ran.append(step)
                    result = StepResult(step, layer, cached=False)
                results.append(result)
                chain.append(str(layer.descriptor.digest))
                on_result(result)
        finally:
            if root is not None:
                with contextlib.suppress(OSError):
                    release_work_dir(root.parent, remove_path)
        return results

    def _unpack(self, done: Sequence[Descriptor]) -> Path:
        # A build killed mid-step leaves its root filesystem behind: clear those nobody holds.
        remove_abandoned(self.work_dir, "rootfs-*", remove_path)
        root = claim_work_dir(self.work_dir, "rootfs-") / "root"
        try:
            unpack_layers(self.layout, [*self.base_layers, *done], root)
        except BaseException:
            with contextlib.suppress(OSError):
                release_work_dir(root.parent, remove_path)
            raise
        return root

    def _execute(self, sandbox: Sandbox, root: Path, step: Step) -> Layer:
        apt_rootless = None
        if os.geteuid() != 0:
            apt_rootless = root.parent / "apt-rootless.conf"
            apt_rootless.write_bytes(_APT_ROOTLESS)
        before = snapshot(root)  # before the mount points: they are removed after the step
        _sandbox_dirs(root)
        binds, placeholders = _binds(root, step, self.secrets, apt_rootless)
        make_args = _bwrap_args if sandbox.kind == "bwrap" else _chroot_args
        args = make_args(sandbox, root, binds, step.command)
        try:
            done = subprocess.run(
                args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except OSError as exc:
            raise BuildFailed(f"cannot start the sandbox {sandbox.program}: {exc}") from None
        finally:
            _remove_placeholders(root, placeholders)
        if done.returncode != 0:
            raise BuildFailed(
                f"the build step failed (exit {done.returncode}): {step.title}",
                self._redact(_tail(done.stdout)) or None,
            )
        after = snapshot(root)
        changes = diff(before, after)
        # What the step made and the layer leaves out goes from the root too: a later step sees
        # the root a fresh unpack of the layers would give (no package lists, say).
        remove_inside(root, [rel for rel in changes.volatile if rel not in before])
        return build_layer(layer_entries(root, changes, after), self.layout, "gzip")

    def _redact(self, text: str) -> str:
        """A step that prints its secret must not put it in skiff's error message."""
        for source in self.secrets.values():
            with contextlib.suppress(OSError):
                value = source.read_text(errors="replace").strip()
                if value:
                    text = text.replace(value, "***")
        return text


def _tail(output: bytes) -> str:
    lines = output.decode(errors="replace").rstrip().splitlines()
    return "\n".join(lines[-_OUTPUT_TAIL:])


def step_env(base_env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """What a step sees: a root shell's basics, the base image's variables, then cog.yaml's."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    env.update(base_env)
    env.update(extra)
    return env


__all__ = [
    "Changes",
    "FileState",
    "Sandbox",
    "SecretMount",
    "Step",
    "StepResult",
    "StepRunner",
    "check_secrets",
    "diff",
    "layer_entries",
    "parse_secret",
    "plan_steps",
    "python_step",
    "snapshot",
    "step_env",
    "step_key",
    "system_packages_step",
]
