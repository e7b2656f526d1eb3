"""Reproducible layer tars, streamed into the cache, with a stat-based cache in front.

Reproducible means: the same entries give the same bytes on any machine. Entries are sorted,
parent directories are added, and every header carries mtime 0, uid/gid 0, empty user/group names
and the mode the caller chose; nothing from the host (owner, time, inode) reaches the tar.
Compressed layers go through ``reproducible_gzip`` or ``reproducible_zstd``, whose bytes depend
on the tar alone (not on the zlib the interpreter happens to be linked with, nor on threads).

Files are streamed (constant memory) into a blob while both the compressed digest and the
uncompressed one (the diff_id) are computed in the same pass. A fingerprint of the sources'
``stat`` results maps to the finished layer, so a rebuild with unchanged inputs reads nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shlex
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from skiff.digest import Digest
from skiff.errors import BuildFailed
from skiff.fsutil import write_atomic
from skiff.image.layout import GrowingBlob, Layout, cache_dir
from skiff.image.oci import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, Descriptor, canonical_json
from skiff.image.reproducible_gzip import GzipMembers
from skiff.image.reproducible_zstd import ZstdFrames

Compression = Literal["none", "gzip", "zstd"]

# Bump when a layer's bytes change (tar or compression): stat-cache entries of another format
# are never reused.
_FORMAT_VERSION = 2  # 2: gzip layers compressed by reproducible_gzip
_DIR_MODE = 0o755
_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing in a layer: a file (from a path or bytes), a directory, a symlink, or a hard
    link to a file earlier in the same layer.

    ``path`` is where it appears in the image (absolute, ``/``-separated).
    """

    path: str
    mode: int
    source: Path | bytes | None = None
    link: str | None = None
    # (st_dev, st_ino) of the source file when it was scanned: it is read only if it is still
    # that very file (a swap for a symlink or another file after the scan is a build error).
    identity: tuple[int, int] | None = field(default=None, compare=False)
    # The path (in the image) of the file this one is a hard link to, in the same layer.
    hardlink: str | None = None

    @classmethod
    def file(
        cls,
        path: str,
        source: Path | bytes,
        mode: int = 0o644,
        *,
        identity: tuple[int, int] | None = None,
    ) -> Entry:
        return cls(path, mode, source=source, identity=identity)

    @classmethod
    def dir(cls, path: str, mode: int = _DIR_MODE) -> Entry:
        return cls(path, mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, 0o777, link=target)

    @classmethod
    def hard_link(cls, path: str, target: str, mode: int = 0o644) -> Entry:
        """A second name for the file ``target`` (which must be in the same layer): stored once,
        as a tar hard link, and unpacked as one inode, as the step that made it left it."""
        return cls(path, mode, hardlink=target)

    @property
    def kind(self) -> Literal["file", "dir", "symlink", "hardlink"]:
        if self.hardlink is not None:
            return "hardlink"
        if self.link is not None:
            return "symlink"
        return "dir" if self.source is None else "file"

    @property
    def name(self) -> str:
        """The path as stored in the tar: normalised, relative to the root."""
        return _tar_name(self.path)


@dataclass(frozen=True)
class Layer:
    """A layer blob in the cache: its descriptor (compressed digest) and diff_id (uncompressed)."""

    descriptor: Descriptor
    diff_id: Digest

    def to_json(self) -> dict[str, Any]:
        return {"descriptor": self.descriptor.to_json(), "diff_id": str(self.diff_id)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Layer:
        return cls(Descriptor.from_json(value["descriptor"]), Digest.parse(value["diff_id"]))


def _tar_name(path: str) -> str:
    norm = posixpath.normpath("/" + path).lstrip("/")
    if not norm or ".." in path.split("/"):
        raise BuildFailed(f"invalid path for a layer entry: {path!r}")
    return norm


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries keyed by tar name, with missing parent directories added, in a fixed order."""
    by_name: dict[str, Entry] = {}
    for entry in entries:
        name = entry.name
        if name in by_name:
            raise BuildFailed(f"two layer entries for the same path /{name}")
        by_name[name] = entry
    for name in list(by_name):
        parent = posixpath.dirname(name)
        while parent and parent not in by_name:
            by_name[parent] = Entry.dir("/" + parent)
            parent = posixpath.dirname(parent)
    for name in by_name:
        parent = posixpath.dirname(name)
        if parent and by_name[parent].kind != "dir":
            raise BuildFailed(f"/{name} is inside /{parent}, which is not a directory")
    # Sorting by components keeps a directory's contents together, right after it.
    order = sorted(by_name, key=_sort_key)
    position = {name: i for i, name in enumerate(order)}
    for name, entry in by_name.items():
        if entry.hardlink is not None:
            target = _tar_name(entry.hardlink)
            # A reader links to a name it has already written: the target must come first.
            if target not in by_name or by_name[target].kind != "file":
                raise BuildFailed(f"/{name} is a hard link to /{target}, not a file of the layer")
            if position[target] > position[name]:
                raise BuildFailed(f"/{name} is a hard link to /{target}, which comes after it")
    return [by_name[n] for n in order]


def _sort_key(name: str) -> list[str]:
    return name.split("/")


class _TarSink:
    """Where tarfile writes: it counts (tarfile asks ``tell()``) and, for a compressed layer,
    hashes the uncompressed bytes on their way to the compressor (the diff_id). An uncompressed
    layer's diff_id is its digest: hashing it here too would only double the work."""

    def __init__(self, target: Any, *, hashed: bool) -> None:
        self._target = target
        self.hash = hashlib.sha256() if hashed else None
        self.offset = 0

    def write(self, data: bytes) -> int:
        if self.hash is not None:
            self.hash.update(data)
        self._target.write(data)
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        self._target.flush()


class _Stoppable:
    """A source file whose reading stops (BuildFailed) once ``stop`` is set: layers written side
    by side end soon after one of them failed, instead of running to their end."""

    def __init__(self, source: IO[bytes], stop: threading.Event) -> None:
        self._source = source
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise BuildFailed("stopped: another part of the build failed or was interrupted")
        return self._source.read(size)


def _add(tar: tarfile.TarFile, entry: Entry, stop: threading.Event | None = None) -> None:
    info = tarfile.TarInfo(entry.name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = entry.mode & 0o7777
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link or ""
        tar.addfile(info)
    elif entry.kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = _tar_name(entry.hardlink or "")
        tar.addfile(info)
    elif isinstance(entry.source, bytes):
        info.size = len(entry.source)
        tar.addfile(info, _BytesReader(entry.source))
    else:
        assert isinstance(entry.source, Path)
        try:
            with open_source(entry.source, entry.identity) as f:
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f if stop is None else _Stoppable(f, stop))
        except OSError as exc:
            raise unreadable(entry.source, exc) from None


def unreadable(path: Path, exc: OSError) -> BuildFailed:
    """The build error for a file or folder skiff cannot read: what happened, and the fix."""
    if isinstance(exc, PermissionError):
        what = "folder" if path.is_dir() else "file"
        return BuildFailed(
            f"cannot read the {what} {path}: permission denied",
            f"make it readable (chmod -R u+rX {shlex.quote(str(path))}), or leave it out of"
            " the image with a line in .dockerignore",
        )
    return BuildFailed(
        f"cannot read {path}: {exc.strerror or exc}",
        "check that the file exists and is readable, and is not changing during the build",
    )


def open_source(path: Path, identity: tuple[int, int] | None = None) -> IO[bytes]:
    """``path`` open for reading if it is a regular file (and, with ``identity``, the very one
    scanned), never through a symlink at its end and without opening anything else.

    The name is opened as O_PATH first (no open of a FIFO, which would hang, or of a device);
    only once fstat shows the regular file expected is that inode opened for reading, through
    its descriptor, so nothing swapped in between can be read instead.
    """
    try:
        handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _changed(path, "it is a symlink now") from None
        raise
    try:
        st = os.fstat(handle)
        if stat.S_ISLNK(st.st_mode):  # O_PATH with O_NOFOLLOW holds the link itself
            raise _changed(path, "it is a symlink now")
        if not stat.S_ISREG(st.st_mode):
            raise _changed(path, "it is no longer a regular file")
        if identity is not None and (st.st_dev, st.st_ino) != identity:
            raise _changed(path, "another file took its place")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    return os.fdopen(fd, "rb")


def _changed(path: Path, how: str) -> BuildFailed:
    return BuildFailed(
        f"{path} changed while skiff was building the image: {how}",
        "run the build again once nothing is changing the model folder",
    )


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos : end])
        self._pos += len(chunk)
        return chunk


def write_layer(
    entries: Iterable[Entry],
    layout: Layout,
    compression: Compression,
    *,
    watch: Callable[[GrowingBlob], None] | None = None,
    stop: threading.Event | None = None,
) -> Layer:
    """Writes the layer tar for ``entries`` into ``layout``, reading every source once.

    ``watch`` is given the blob as soon as writing starts, to follow it while it grows; once
    ``stop`` is set, the writing ends with BuildFailed and leaves nothing in the cache.
    """
    ordered = _with_parents(entries)
    with layout.writer(watch=watch) as blob, contextlib.ExitStack() as compressor:
        if compression == "gzip":
            sink = _TarSink(compressor.enter_context(GzipMembers(blob)), hashed=True)
        elif compression == "zstd":
            sink = _TarSink(compressor.enter_context(ZstdFrames(blob)), hashed=True)
        else:
            sink = _TarSink(blob, hashed=False)
        # Mode "w" (not the streaming "w|", whose 10 kB buffer slicing costs more than the
        # hashing) writes the same bytes; large copies keep Python's share of the work small.
        with tarfile.TarFile(
            fileobj=cast(IO[bytes], sink),
            mode="w",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            copybufsize=_COPY_BUFFER,
        ) as tar:
            for entry in ordered:
                _add(tar, entry, stop)
        compressor.close()  # the last gzip member must be in the blob before it is committed
        digest = blob.commit()
        size = blob.size
    media_type = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}.get(compression, OCI_LAYER)
    diff_id = Digest(sink.hash.hexdigest()) if sink.hash is not None else digest
    return Layer(Descriptor(media_type, digest, size), diff_id)


class StatCache:
    """Maps a key (a fingerprint of inputs) to a finished layer; one small JSON file per key.

    One file per key means concurrent builds never lose each other's updates. The file's name
    carries the layer format: a layer written by an older skiff (whose gzip bytes differ) is
    never reused, for any kind of key (source, dependencies, build steps).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def default(cls) -> StatCache:
        return cls(cache_dir() / "layers")

    def get(self, key: str, layout: Layout) -> Layer | None:
        """The cached layer for ``key`` if its blob is still in ``layout`` with the right size."""
        try:
            layer = Layer.from_json(json.loads(self._path(key).read_bytes()))
        except Exception:  # missing or damaged entry: a miss, never an error
            return None
        if not layout.has(layer.descriptor.digest, layer.descriptor.size):
            return None
        return layer

    def put(self, key: str, layer: Layer) -> None:
        # A cache that cannot be written only costs speed next time; never fail the build for it.
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(key), canonical_json(layer.to_json()))

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.v{_FORMAT_VERSION}.json"


def _keyable(text: str | None) -> Any:
    """A name as JSON can hold it: a file name that is not UTF-8 (Linux names are bytes; Python
    holds the odd bytes as surrogates) by its bytes, in a form no UTF-8 name can take."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return {"bytes": os.fsencode(text).hex()}
    return text


def fingerprint(entries: Iterable[Entry], compression: Compression) -> str:
    """A key that changes whenever an entry or a source file's stat result changes.

    Size, mtime and ctime (in ns), inode and device together catch edits, replacements and
    ``touch -d`` tricks without reading the files.
    """
    items: list[Any] = []
    for entry in sorted(entries, key=lambda e: e.name):
        item: list[Any] = [_keyable(entry.name), entry.mode, entry.kind, _keyable(entry.link)]
        if entry.hardlink is not None:
            item.append(_keyable(entry.hardlink))
        if isinstance(entry.source, bytes):
            item.append(hashlib.sha256(entry.source).hexdigest())
        elif isinstance(entry.source, Path):
            try:
                st = entry.source.stat(follow_symlinks=False)  # a link swapped in: a new key
            except OSError:
                item.append(None)  # build_layer will report the missing file
            else:
                item.append(
                    [
                        _keyable(str(entry.source.absolute())),
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        st.st_dev,
                    ]
                )
        items.append(item)
    return hashlib.sha256(canonical_json([compression, items])).hexdigest()


def build_layer(
    entries: Iterable[Entry],
    layout: Layout,
    compression: Compression = "gzip",
    *,
    stat_cache: StatCache | None = None,
    watch: Callable[[GrowingBlob], None] | None = None,
    stop: threading.Event | None = None,
) -> Layer:
    """Builds (or finds in the stat cache) the reproducible layer for ``entries``.

    With a ``stat_cache``, unchanged inputs are recognised from their stat results alone and the
    previously built blob is returned without reading any file. ``watch`` hears of a blob only
    when one is actually written.
    """
    entries = list(entries)
    if stat_cache is None:
        return write_layer(entries, layout, compression, watch=watch, stop=stop)
    key = fingerprint(entries, compression)
    cached = stat_cache.get(key, layout)
    if cached is not None:
        return cached
    layer = write_layer(entries, layout, compression, watch=watch, stop=stop)
    # Only remember the result if nothing changed while it was being read.
    if fingerprint(entries, compression) == key:
        stat_cache.put(key, layer)
    return layer
