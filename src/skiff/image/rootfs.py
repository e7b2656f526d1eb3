"""Unpacking image layers into a root filesystem, safely, so build steps can run over it.

A layer is untrusted input (a base image comes from anywhere): nothing in it may write outside
the root. Every path is resolved component by component *inside* the root, the way a chroot
would see it: ``..`` is refused, a leading ``/`` is relative to the root, and a symlink met on
the way (``/lib -> usr/lib`` in merged-/usr systems) is followed with its target read as if the
root were ``/`` — an absolute target or a run of ``..`` can never climb out. The last component
is never followed: an entry replaces whatever is there, symlink included. Hard links must point
at something already inside the root.

OCI whiteouts are applied: ``.wh.NAME`` deletes NAME from the layers below, and
``.wh..wh..opq`` empties its directory of what the layers below put there.

Left out, on purpose: device nodes (always skipped: creating them needs root, and a build step
gets a fresh ``/dev`` from the sandbox anyway) and extended attributes (file capabilities).
Ownership is restored only when running as root; otherwise the files belong to the user, and
the sandbox maps that user to root.

Nothing else writes into the root while a layer is applied, so resolving by path is not racy.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from skiff.errors import BuildFailed
from skiff.image.layout import Layout
from skiff.image.oci import Descriptor

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_MAX_SYMLINKS = 40  # as the kernel's path walk: a loop is an error, not a hang
_CHUNK = 1 << 20


@dataclass
class UnpackReport:
    """What unpacking left out (device nodes), for a build log or a test."""

    skipped: list[str] = field(default_factory=list)


def unpack_layers(layout: Layout, layers: Iterable[Descriptor], root: Path) -> UnpackReport:
    """Applies ``layers`` (bottom first, blobs in ``layout``) onto the directory ``root``."""
    report = UnpackReport()
    root.mkdir(parents=True, exist_ok=True)
    for descriptor in layers:
        if "zstd" in descriptor.media_type:
            raise BuildFailed(
                f"layer {descriptor.digest} is zstd-compressed, which skiff cannot unpack yet",
                "use a base image with gzip or uncompressed layers",
            )
        with layout.open_blob(descriptor.digest) as blob:
            try:
                apply_layer(blob, root, report=report)
            except BuildFailed as exc:
                raise BuildFailed(f"layer {descriptor.digest}: {exc.message}", exc.hint) from None
    return report


def apply_layer(fileobj: IO[bytes], root: Path, *, report: UnpackReport | None = None) -> None:
    """Applies one layer tar (plain or gzip, from a seekable file) onto ``root``."""
    report = report if report is not None else UnpackReport()
    applier = _Applier(Path(os.path.realpath(root)), report)
    try:
        # A stream: layers are read once, front to back.
        with tarfile.open(fileobj=_tar_stream(fileobj), mode="r|*") as tar:
            for member in tar:
                applier.apply(member, tar)
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BuildFailed(
                f"no space left while unpacking into {root}", "free some disk space"
            ) from None
        raise BuildFailed(f"cannot unpack the layer: {exc}") from None
    applier.finish()


_GZIP_MAGIC = b"\x1f\x8b"


def _tar_stream(fileobj: IO[bytes]) -> IO[bytes]:
    """The layer's tar (``fileobj`` is a seekable blob file): a gzip layer is decompressed here.

    tarfile's own stream decompression ("r|gz") stops after the first gzip member, and a layer
    may hold several (skiff's own do: see reproducible_gzip); gzip.GzipFile reads them all.
    """
    head = fileobj.read(len(_GZIP_MAGIC))
    fileobj.seek(-len(head), os.SEEK_CUR)
    if head == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=fileobj, mode="rb"))
    return fileobj


class _Applier:
    def __init__(self, root: Path, report: UnpackReport) -> None:
        self.root = root
        self.report = report
        self.is_root = os.geteuid() == 0
        self.written: set[str] = set()  # relative paths this layer created
        self.dir_modes: list[tuple[Path, tarfile.TarInfo]] = []

    # --- paths -------------------------------------------------------------------------------

    def relative(self, name: str) -> str:
        """The member's path relative to the root; ``..`` anywhere is refused."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise BuildFailed(
                f"the layer has an entry {name!r} that climbs out with '..'",
                "the image is malformed or hostile; choose another base image",
            )
        return "/".join(parts)

    def resolve_dir(self, rel: str, *, create: bool) -> Path:
        return resolve_dir(self.root, rel, create=create)

    def target(self, rel: str) -> Path:
        parent, name = posixpath.split(rel)
        return self.resolve_dir(parent, create=True) / name

    # --- entries -----------------------------------------------------------------------------

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        rel = self.relative(member.name)
        if not rel:
            return  # the root itself ("./"): its mode is the unpacker's business
        parent, name = posixpath.split(rel)
        if name == OPAQUE_MARKER:
            self.opaque(parent)
            return
        if name.startswith(WHITEOUT_PREFIX):
            self.whiteout(posixpath.join(parent, name[len(WHITEOUT_PREFIX) :]))
            return
        if member.ischr() or member.isblk():
            self.report.skipped.append("/" + rel)
            return
        path = self.target(rel)
        self.written.add(rel)
        if member.isdir():
            if not path.is_symlink() and path.is_dir():
                pass  # merge into the existing directory
            else:
                remove_path(path)
                os.mkdir(path, 0o700)
            self.dir_modes.append((path, member))
            return
        remove_path(path)
        if member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self.hardlink(member, path)
            return  # one inode: its owner and mode came with the entry it links to
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            self.report.skipped.append("/" + rel)
            return
        self.finish_entry(path, member)

    def hardlink(self, member: tarfile.TarInfo, path: Path) -> None:
        link_rel = self.relative(member.linkname)
        parent, name = posixpath.split(link_rel)
        try:
            source = self.resolve_dir(parent, create=False) / name
            st = os.lstat(source)
        except (FileNotFoundError, NotADirectoryError):
            raise BuildFailed(
                f"/{member.name} is a hard link to /{link_rel}, which is not in the image"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise BuildFailed(f"/{member.name} is a hard link to a directory")
        os.link(source, path, follow_symlinks=False)

    def finish_entry(self, path: Path, member: tarfile.TarInfo) -> None:
        if self.is_root:
            with contextlib.suppress(OSError):
                os.lchown(path, member.uid, member.gid)
        mtime_ns = int(member.mtime) * 10**9
        if member.issym():
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        else:
            os.chmod(path, member.mode & 0o7777)
            os.utime(path, ns=(mtime_ns, mtime_ns))

    def whiteout(self, rel: str) -> None:
        parent, name = posixpath.split(rel)
        if name in ("", ".", ".."):
            return
        try:
            path = self.resolve_dir(parent, create=False) / name
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing below to hide
        remove_path(path)

    def opaque(self, rel: str) -> None:
        """Empties ``rel`` of what lower layers put there; this layer's own entries stay."""
        try:
            directory = self.resolve_dir(rel, create=True)
        except NotADirectoryError:
            return
        prefix = f"{rel}/" if rel else ""
        keep = {w for w in self.written if w.startswith(prefix)}
        self.written.add(rel)
        for child in os.listdir(directory):
            child_rel = prefix + child
            if child_rel in keep or any(k.startswith(child_rel + "/") for k in keep):
                continue
            remove_path(directory / child)

    def finish(self) -> None:
        # Directory modes and times last: a read-only directory must still take its children.
        for path, member in reversed(self.dir_modes):
            self.finish_entry(path, member)


def resolve_dir(root: Path, rel: str, *, create: bool = False) -> Path:
    """The real directory for ``rel`` in the image whose root is ``root`` (a real path).

    Symlinks on the way are followed as if ``root`` were ``/``, so the result is always inside
    it. ``create`` makes missing directories (and replaces files in the way); without it a
    missing or non-directory component raises FileNotFoundError or NotADirectoryError.
    """
    current, missing = _walk(root, rel, create=create)
    if missing:
        raise FileNotFoundError(str(current / missing[0]))
    return current


def existing_prefix(root: Path, rel: str) -> tuple[Path, list[str]]:
    """How much of ``rel`` exists: the real path of the deepest existing part (resolved inside
    ``root``; the last component of ``rel`` is not followed) and the components missing below
    it, with symlinks on the way already expanded."""
    parent, name = posixpath.split(rel.strip("/"))
    current, missing = _walk(root, parent, create=False)
    if missing:
        return current, [*missing, name]
    if not name or os.path.lexists(current / name):
        return current / name, []
    return current, [name]


def _walk(root: Path, rel: str, *, create: bool) -> tuple[Path, list[str]]:
    current = root
    todo = [p for p in rel.split("/") if p]
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in (".", ".."):
            current = current.parent if part == ".." and current != root else current
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if not create:
                return current, [part, *todo]
            os.mkdir(candidate, 0o755)
            current = candidate
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise BuildFailed(f"too many levels of symbolic links in /{rel}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if not stat.S_ISDIR(st.st_mode):
            if not create:
                raise NotADirectoryError(str(candidate))
            # A file where the layer needs a directory: the layer wins, as in Docker.
            os.unlink(candidate)
            os.mkdir(candidate, 0o755)
        current = candidate
    if not (current == root or root in current.parents):
        raise BuildFailed(f"/{rel} resolves outside the root")  # a tripwire: unreachable
    return current, []


def remove_path(path: Path) -> None:
    """Removes whatever is at ``path`` (never following a symlink), read-only directories too."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        _make_writable(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _make_writable(top: Path) -> None:
    # rmtree needs write permission on each directory when not running as root.
    if os.geteuid() == 0:
        return
    for dirpath, dirnames, _ in os.walk(top):
        os.chmod(dirpath, 0o700)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "UnpackReport",
    "apply_layer",
    "existing_prefix",
    "remove_path",
    "resolve_dir",
    "unpack_layers",
]
