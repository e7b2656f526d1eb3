"""Unpacking image layers into a root filesystem, safely, so build steps can run over it.

A layer is untrusted input (a base image comes from anywhere): nothing in it may create,
change or remove anything outside the root. Every path is resolved component by component
*inside* the root, the way a chroot would see it: ``..`` in an entry's name is refused, a
leading ``/`` is relative to the root, and a symlink met on the way (``/lib -> usr/lib`` in
merged-/usr systems) is followed with its target read as if the root were ``/`` — an absolute
target or a run of ``..`` can never climb out. The walk holds a descriptor of each directory
it reaches and every operation (create, chmod, chown, utime, hard link, removal) names one
component below such a descriptor without following it: the last component is never followed,
an entry replaces whatever is there, symlink included, and a directory's mode, set at the end
of the layer, is set only if the very directory made for it (same inode) is still in place.
Hard links must point at something already inside the root; one to a symlink links the
symlink itself.

OCI whiteouts are applied: ``.wh.NAME`` deletes NAME from the layers below, and
``.wh..wh..opq`` empties its directory of what the layers below put there.

Left out, on purpose: device nodes (always skipped: creating them needs root, and a build step
gets a fresh ``/dev`` from the sandbox anyway) and extended attributes (file capabilities).
Ownership is restored only when running as root; otherwise the files belong to the user, and
the sandbox maps that user to root.

Nothing else writes into the root while a layer is applied; the descriptors make the walk
safe even if something did.
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

import zstandard

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
        with layout.open_blob(descriptor.digest) as blob:
            try:
                apply_layer(blob, root, report=report)
            except BuildFailed as exc:
                raise BuildFailed(f"layer {descriptor.digest}: {exc.message}", exc.hint) from None
    return report


def apply_layer(fileobj: IO[bytes], root: Path, *, report: UnpackReport | None = None) -> None:
    """Applies one layer tar (plain, gzip or zstd, from a seekable file) onto ``root``."""
    report = report if report is not None else UnpackReport()
    try:
        applier = _Applier(Path(os.path.realpath(root)), report)
        try:
            # A stream: layers are read once, front to back.
            with tarfile.open(fileobj=_tar_stream(fileobj), mode="r|*") as tar:
                for member in tar:
                    applier.apply(member, tar)
            applier.finish()
        finally:
            applier.close()
    except (tarfile.TarError, EOFError, OSError, UnicodeError, zstandard.ZstdError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BuildFailed(
                f"no space left while unpacking into {root}", "free some disk space"
            ) from None
        raise BuildFailed(f"cannot unpack the layer: {exc}") from None


_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _tar_stream(fileobj: IO[bytes]) -> IO[bytes]:
    """The layer's tar (``fileobj`` is a seekable blob file): a gzip layer is decompressed here.

    tarfile's own stream decompression ("r|gz") stops after the first gzip member, and a layer
    may hold several (skiff's own do: see reproducible_gzip); gzip.GzipFile reads them all. A
    zstd layer is read the same way, across all its frames.
    """
    head = fileobj.read(len(_ZSTD_MAGIC))
    fileobj.seek(-len(head), os.SEEK_CUR)
    if head[: len(_GZIP_MAGIC)] == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=fileobj, mode="rb"))
    if head == _ZSTD_MAGIC:
        # Every frame, not just the first (skiff's zstd layers are a series of frames).
        reader = zstandard.ZstdDecompressor().stream_reader(fileobj, read_across_frames=True)
        return cast(IO[bytes], reader)
    return fileobj


# --- resolving inside the root, by descriptor ----------------------------------------------
#
# Every operation goes through a descriptor of a directory already known to be inside the root,
# and names one component below it, never followed (the *at system calls with O_NOFOLLOW or
# AT_SYMLINK_NOFOLLOW). Metadata of a directory or a FIFO is set through an O_PATH descriptor of
# that very inode (/proc/self/fd/N), so a symlink swapped in later cannot redirect it.

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NODE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 512  # real images stay far below; deeper trees would exhaust descriptors on removal


def _by_fd(fd: int) -> str:
    # The inode an O_PATH descriptor holds, by a name no symlink in the image can redirect.
    return f"/proc/self/fd/{fd}"


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_names(root_fd: int, names: list[str]) -> int:
    """A descriptor of the real directory ``names`` below the root; no symlink is followed."""
    fd = os.open(".", _DIR, dir_fd=root_fd)
    try:
        for name in names:
            child = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(root_fd: int, rel: str, *, create: bool) -> tuple[int, list[str], list[str]]:
    """Resolves the directory ``rel`` as a chroot would: (descriptor, real components, missing).

    Symlinks on the way are followed with the root as ``/``: an absolute target starts again at
    the root and ``..`` stops there. ``create`` makes missing directories and replaces a
    non-directory in the way (the layer wins, as in Docker); without it the walk stops at the
    first missing component (returned in ``missing`` with the rest) and raises
    NotADirectoryError at a component that is not a directory. The caller closes the descriptor.
    """
    names: list[str] = []
    fd = os.open(".", _DIR, dir_fd=root_fd)
    todo = [p for p in rel.split("/") if p not in ("", ".")]
    hops = 0
    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if names:
                    names.pop()
                    os.close(fd)
                    fd = -1
                    fd = _open_names(root_fd, names)
                continue
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return fd, names, [part, *todo]
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > _MAX_SYMLINKS:
                        raise BuildFailed(f"too many levels of symbolic links in /{rel}") from None
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):
                        os.close(fd)
                        fd = -1
                        names = []
                        fd = os.open(".", _DIR, dir_fd=root_fd)
                    todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                    continue
                if not create:
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", "/" + rel) from None
                os.unlink(part, dir_fd=fd)
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
            names.append(part)
            if len(names) > _MAX_DEPTH:
                raise BuildFailed(
                    f"/{rel} is more than {_MAX_DEPTH} directories deep",
                    "the image is malformed or hostile; choose another base image",
                )
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd, names, []


def _remove_at(dir_fd: int, name: str) -> bool:
    """Removes ``name`` in ``dir_fd`` whatever it is, never following a symlink (read-only
    directories too); True if something was there."""
    st = _lstat_at(dir_fd, name)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True
    # Depth first, without recursion, one descriptor per level (the depth is bounded on unpack).
    stack: list[tuple[int, str, int, list[str]]] = []
    try:
        stack.append((dir_fd, name, *_open_for_removal(dir_fd, name)))
        while stack:
            parent_fd, dir_name, fd, children = stack[-1]
            if not children:
                stack.pop()
                os.close(fd)
                os.rmdir(dir_name, dir_fd=parent_fd)
                continue
            child = children.pop()
            child_st = _lstat_at(fd, child)
            if child_st is None:
                continue
            if stat.S_ISDIR(child_st.st_mode):
                stack.append((fd, child, *_open_for_removal(fd, child)))
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)
    return True


def _open_for_removal(dir_fd: int, name: str) -> tuple[int, list[str]]:
    # Write and search permission first (a read-only directory from the image), on the inode.
    path_fd = os.open(name, _DIR, dir_fd=dir_fd)
    try:
        if os.geteuid() != 0:
            os.chmod(_by_fd(path_fd), 0o700)
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
    finally:
        os.close(path_fd)
    try:
        return fd, os.listdir(fd)
    except BaseException:
        os.close(fd)
        raise


class _Root:
    """The root filesystem, open as a directory descriptor, with the last parent looked up."""

    def __init__(self, root: Path) -> None:
        self.fd = os.open(root, _DIR)
        self._cached: tuple[str, int, list[str]] | None = None

    def close(self) -> None:
        self.forget()
        os.close(self.fd)

    def forget(self) -> None:
        """Something was removed: a looked-up directory may be gone or resolve elsewhere now."""
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def parent(self, rel: str, *, create: bool) -> tuple[int, list[str]]:
        """The directory ``rel`` (descriptor owned by this object, real components)."""
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1], self._cached[2]
        fd, names, missing = _walk(self.fd, rel, create=create)
        if missing:
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "no such directory", "/" + rel)
        self.forget()
        self._cached = (rel, fd, names)
        return fd, names

    def remove(self, dir_fd: int, name: str) -> None:
        if _remove_at(dir_fd, name):
            self.forget()


@dataclass
class _PendingDir:
    """A directory whose mode and times are set once the layer's entries are all in."""

    parent: list[str]  # real components of its parent
    name: str
    device: int
    inode: int
    member: tarfile.TarInfo


class _Applier:
    def __init__(self, root: Path, report: UnpackReport) -> None:
        self.root = _Root(root)
        self.report = report
        self.is_root = os.geteuid() == 0
        self.written: set[str] = set()  # relative paths this layer created
        # By path: a later entry for the same path supersedes (its inode may even be the same).
        self.pending: dict[str, _PendingDir] = {}
        self.skipped: set[str] = set()

    def close(self) -> None:
        self.root.close()

    # --- paths -------------------------------------------------------------------------------

    def relative(self, name: str) -> str:
        """The member's path relative to the root; ``..`` anywhere is refused."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise BuildFailed(
                f"the layer has an entry {name!r} that climbs out with '..'",
                "the image is malformed or hostile; choose another base image",
            )
        if len(parts) > _MAX_DEPTH:
            raise BuildFailed(
                f"the layer has an entry more than {_MAX_DEPTH} directories deep",
                "the image is malformed or hostile; choose another base image",
            )
        return "/".join(parts)

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
            self.skipped.add(rel)
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()) and (
            not member.isfifo()
        ):
            self.report.skipped.append("/" + rel)
            self.skipped.add(rel)
            return
        dir_fd, parent_names = self.root.parent(parent, create=True)
        self.written.add(rel)
        self.pending.pop(rel, None)
        existing = _lstat_at(dir_fd, name)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    self.root.remove(dir_fd, name)
                    dir_fd, parent_names = self.root.parent(parent, create=True)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            self.pending[rel] = _PendingDir(parent_names, name, st.st_dev, st.st_ino, member)
            return
        if existing is not None:
            self.root.remove(dir_fd, name)
            dir_fd, parent_names = self.root.parent(parent, create=True)
        if member.isreg():
            self.regular(dir_fd, name, member, tar)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=dir_fd)
            self.symlink_meta(dir_fd, name, member)
        elif member.islnk():
            self.hardlink(member, dir_fd, name)
        else:
            os.mkfifo(name, 0o600, dir_fd=dir_fd)
            fd = os.open(name, _NODE, dir_fd=dir_fd)
            try:
                self.node_meta(fd, member)
            finally:
                os.close(fd)

    def regular(
        self, dir_fd: int, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile
    ) -> None:
        source = tar.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()
            if self.is_root:
                with contextlib.suppress(OSError):
                    os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
            mtime_ns = int(member.mtime) * 10**9
            os.utime(fd, ns=(mtime_ns, mtime_ns))

    def symlink_meta(self, dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        if self.is_root:
            with contextlib.suppress(OSError):
                os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
        mtime_ns = int(member.mtime) * 10**9
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def node_meta(self, fd: int, member: tarfile.TarInfo) -> None:
        """Owner, mode and times of a directory or FIFO, through its O_PATH descriptor."""
        if self.is_root:
            with contextlib.suppress(OSError):
                os.chown(_by_fd(fd), member.uid, member.gid)
        os.chmod(_by_fd(fd), member.mode & 0o7777)
        mtime_ns = int(member.mtime) * 10**9
        os.utime(_by_fd(fd), ns=(mtime_ns, mtime_ns))

    def hardlink(self, member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
        link_rel = self.relative(member.linkname)
        if link_rel in self.skipped:
            self.report.skipped.append("/" + self.relative(member.name))
            return  # a link to a device node, which was left out too
        source_parent, source_name = posixpath.split(link_rel)
        missing = BuildFailed(
            f"/{member.name} is a hard link to /{link_rel}, which is not in the image"
        )
        try:
            fd, _, gone = _walk(self.root.fd, source_parent, create=False)
        except NotADirectoryError:
            raise missing from None
        try:
            st = _lstat_at(fd, source_name) if not gone and source_name else None
            if st is None:
                raise missing
            if stat.S_ISDIR(st.st_mode):
                raise BuildFailed(f"/{member.name} is a hard link to a directory")
            # linkat without AT_SYMLINK_FOLLOW: a symlink is linked itself, never its target.
            os.link(source_name, name, src_dir_fd=fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def whiteout(self, rel: str) -> None:
        parent, name = posixpath.split(rel)
        if name in ("", ".", ".."):
            return
        try:
            dir_fd, _ = self.root.parent(parent, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing below to hide
        self.root.remove(dir_fd, name)

    def opaque(self, rel: str) -> None:
        """Empties ``rel`` of what lower layers put there; this layer's own entries stay."""
        try:
            dir_fd, _ = self.root.parent(rel, create=True)
        except NotADirectoryError:
            return
        prefix = f"{rel}/" if rel else ""
        keep = {w for w in self.written if w.startswith(prefix)}
        self.written.add(rel)
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            children = os.listdir(listing)
        finally:
            os.close(listing)
        for child in children:
            child_rel = prefix + child
            if child_rel in keep or any(k.startswith(child_rel + "/") for k in keep):
                continue
            dir_fd, _ = self.root.parent(rel, create=True)
            self.root.remove(dir_fd, child)

    def finish(self) -> None:
        # Directory modes and times last: a read-only directory must still take its children.
        # Each is found again by its real path and must be the very directory made or merged
        # (same inode): one replaced later in the layer (by a symlink, say) is left alone.
        for pending in reversed(self.pending.values()):
            try:
                parent_fd = _open_names(self.root.fd, pending.parent)
            except OSError:
                continue
            try:
                fd = os.open(pending.name, _NODE, dir_fd=parent_fd)
            except OSError:
                continue
            finally:
                os.close(parent_fd)
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == (
                    pending.device,
                    pending.inode,
                ):
                    self.node_meta(fd, pending.member)
            finally:
                os.close(fd)


def resolve_dir(root: Path, rel: str, *, create: bool = False) -> Path:
    """The real directory for ``rel`` in the image whose root is ``root`` (a real path).

    Symlinks on the way are followed as if ``root`` were ``/``, so the result is always inside
    it and has no symlink below ``root``. ``create`` makes missing directories (and replaces
    files in the way); without it a missing or non-directory component raises FileNotFoundError
    or NotADirectoryError.
    """
    root_fd = os.open(root, _DIR)
    try:
        fd, names, missing = _walk(root_fd, rel, create=create)
        os.close(fd)
    finally:
        os.close(root_fd)
    if missing:
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(root / missing[0]))
    return root.joinpath(*names)


def existing_prefix(root: Path, rel: str) -> tuple[Path, list[str]]:
    """How much of ``rel`` exists: the real path of the deepest existing part (resolved inside
    ``root``; the last component of ``rel`` is not followed) and the components missing below
    it, with symlinks on the way already expanded."""
    parent, name = posixpath.split(rel.strip("/"))
    root_fd = os.open(root, _DIR)
    try:
        fd, names, missing = _walk(root_fd, parent, create=False)
        try:
            present = not missing and (not name or _lstat_at(fd, name) is not None)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    current = root.joinpath(*names)
    if missing:
        return current, [*missing, name]
    if present:
        return current / name, []
    return current, [name]


@dataclass(frozen=True)
class MountPoint:
    """Where a sandbox may mount something: a path in the image with no symlink on it, and what
    was created for it (host paths, deepest last), to remove after the step."""

    target: str
    created: list[Path]


def make_mount_point(
    root: Path, rel: str, *, directory: bool, make_last: bool = True
) -> MountPoint | None:
    """Creates the mount point ``rel`` inside ``root`` (the image's symlinks followed inside it),
    so that the sandbox finds every component in place and follows or creates nothing itself.

    The mount point itself is never a symlink and must be of the right kind if it exists: None
    otherwise (and when a component on the way is not a directory). ``make_last=False`` makes the
    parents only (the caller mounts a fresh tmpfs on the parent and the point lands in it).
    """
    parent, name = posixpath.split(rel.strip("/"))
    if not name:
        return None
    created: list[Path] = []
    root_fd = os.open(root, _DIR)
    try:
        try:
            fd, names, missing = _walk(root_fd, parent, create=False)
        except NotADirectoryError:
            return None
        try:
            for part in missing:
                os.mkdir(part, 0o755, dir_fd=fd)
                names.append(part)
                created.append(root.joinpath(*names))
                child = os.open(part, _DIR, dir_fd=fd)
                os.close(fd)
                fd = child
            st = _lstat_at(fd, name)
            if st is None and make_last:
                if directory:
                    os.mkdir(name, 0o755, dir_fd=fd)
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    os.close(os.open(name, flags, 0o644, dir_fd=fd))
                created.append(root.joinpath(*names, name))
            elif st is not None:
                wanted = stat.S_ISDIR if directory else stat.S_ISREG
                if not wanted(st.st_mode):
                    return None
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    return MountPoint("/" + "/".join([*names, name]), created)


def remove_mount_points(root: Path, created: Iterable[Path]) -> None:
    """Removes what ``make_mount_point`` created, deepest first, if still an empty file or an
    empty directory: anything else is a build step's own output. Each is found again without
    following any symlink, so one a step put on the way leads nowhere."""
    root_fd = os.open(root, _DIR)
    try:
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            parts = list(path.relative_to(root).parts)
            try:
                parent_fd = _open_names(root_fd, parts[:-1])
            except OSError:
                continue
            try:
                st = _lstat_at(parent_fd, parts[-1])
                if st is not None and stat.S_ISDIR(st.st_mode):
                    os.rmdir(parts[-1], dir_fd=parent_fd)
                elif st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(parts[-1], dir_fd=parent_fd)
            except OSError:
                pass  # not empty (the step's output), or busy: left as it is
            finally:
                os.close(parent_fd)
    finally:
        os.close(root_fd)


def remove_inside(root: Path, rels: Iterable[str]) -> None:
    """Removes each of ``rels`` (paths relative to ``root``) whatever it is, if still there.

    Each parent is found again component by component without following any symlink (a build
    step may have put one on the way), so nothing outside the root is ever touched; a path whose
    parent is no longer a real directory is left alone. Parents before children is fine: a
    removed directory takes its contents with it.
    """
    root_fd = os.open(root, _DIR)
    try:
        for rel in sorted(set(rels), key=lambda r: r.count("/")):
            parts = [p for p in rel.split("/") if p]
            if not parts or ".." in parts:
                continue
            try:
                parent_fd = _open_names(root_fd, parts[:-1])
            except OSError:
                continue
            try:
                _remove_at(parent_fd, parts[-1])
            except OSError:
                pass  # busy or gone: it only costs space
            finally:
                os.close(parent_fd)
    finally:
        os.close(root_fd)


def remove_path(path: Path) -> None:
    """Removes whatever is at ``path`` (never following a symlink), read-only directories too.

    ``path``'s parent is trusted (skiff's own folders); below it, nothing is followed.
    """
    parent_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_at(parent_fd, path.name)
    finally:
        os.close(parent_fd)


__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "MountPoint",
    "UnpackReport",
    "apply_layer",
    "existing_prefix",
    "make_mount_point",
    "remove_inside",
    "remove_mount_points",
    "remove_path",
    "resolve_dir",
    "unpack_layers",
]
