"""A content-addressed blob store that is also a standard OCI image layout.

The build cache *is* an OCI layout (``blobs/sha256/<hex>``, ``oci-layout``, ``index.json``), so an
image in it can be exported with links instead of copies, and inspected by ``skopeo``/``umoci``.
Blobs are written to a temporary file beside their final name, fsynced, then renamed: a crash or an
error never leaves a partial blob under a digest name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from skiff.digest import Digest
from skiff.errors import BuildFailed, InvalidInput
from skiff.fsutil import write_atomic
from skiff.image.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    REF_NAME_ANNOTATION,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
)

_CHUNK = 1 << 20
# A temporary blob or work folder that no live process holds (flock) and that nobody wrote to
# for this long is a killed build's leftover. (The short wait covers the moment between
# creating one and locking it.)
_UNHELD_GRACE = 5.0
_LAYOUT_MARKER = b'{"imageLayoutVersion":"1.0.0"}'


def cache_dir() -> Path:
    """Where skiff keeps its build cache: ``$SKIFF_CACHE_DIR``, else ``~/.cache/skiff``."""
    configured = os.environ.get("SKIFF_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "skiff"


def default_layout() -> Layout:
    """The OCI layout inside the build cache (created on first use). Opening it removes what
    killed builds left behind: partial blobs, unpacked root filesystems."""
    from skiff.image.rootfs import remove_path  # rootfs builds on this module

    layout = Layout.open(cache_dir() / "oci")
    remove_abandoned(cache_dir() / "rootfs", "rootfs-*", remove_path)
    return layout


# Work folders this process holds, and the descriptor whose lock says so.
_HELD: dict[Path, int] = {}
_HELD_LOCK = threading.Lock()


def claim_work_dir(parent: Path, prefix: str) -> Path:
    """A new folder under ``parent`` (created if need be) that this process holds until
    ``release_work_dir``: a lock that dies with the process, so ``remove_abandoned`` in another
    skiff never removes it while it is in use, and removes it once its owner was killed."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with _HELD_LOCK:
        _HELD[path] = fd
    return path


def release_work_dir(path: Path, remove: Callable[[Path], None]) -> None:
    """Removes a folder from ``claim_work_dir`` (with ``remove``), then lets go of it."""
    try:
        remove(path)
    finally:
        with _HELD_LOCK:
            fd = _HELD.pop(path, None)
        if fd is not None:
            os.close(fd)


def remove_abandoned(parent: Path, pattern: str, remove: Callable[[Path], None]) -> int:
    """Removes the entries of ``parent`` matching ``pattern`` that no live process holds (see
    ``claim_work_dir`` and BlobWriter), left by builds that were killed; returns how many."""
    removed = 0
    cutoff = time.time() - _UNHELD_GRACE
    try:
        candidates = list(parent.glob(pattern))
    except OSError:
        return 0
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime > cutoff:
                continue  # being created, or written right now
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner is alive
                # Still the entry that was locked (not renamed away and replaced meanwhile).
                if os.fstat(fd).st_ino != path.lstat().st_ino:
                    continue
                remove(path)
                removed += 1
            finally:
                os.close(fd)
    return removed


# What a layout holds, and what one being created by a concurrent skiff holds for a moment.
_OWN_ENTRIES = frozenset({"blobs", "oci-layout", "index.json", ".lock"})


def _foreign_entries(root: Path) -> bool:
    """True if ``root`` holds anything a layout (even one being created) would not."""
    return any(
        entry.name not in _OWN_ENTRIES
        and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        for entry in root.iterdir()
    )


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; some filesystems refuse to open directories, which is fine.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class GrowingBlob:
    """A blob while it is being written, readable as it grows.

    A push follows it to stream a layer to the registry while the layer is still being built;
    its digest is known only once the writer commits. Readers see only flushed bytes.
    """

    # How often readers are woken: often enough to keep an upload busy, rarely enough that the
    # writer's hot loop is not slowed by it.
    STEP = 1 << 20

    def __init__(self, tmp: Path, final: Callable[[Digest], Path]) -> None:
        self._tmp = tmp
        self._final = final
        self._cond = threading.Condition()
        self._written = 0
        self._digest: Digest | None = None
        self._failed = False

    @property
    def digest(self) -> Digest | None:
        """The blob's digest once it is complete, else None."""
        with self._cond:
            return self._digest

    @property
    def failed(self) -> bool:
        """True if the writer gave up: the blob will never be complete."""
        with self._cond:
            return self._failed

    def wait(self, beyond: int, timeout: float) -> int:
        """Bytes readable so far, once more than ``beyond`` are, the blob is complete or has
        failed, or ``timeout`` seconds have passed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._written > beyond or self._digest is not None or self._failed,
                timeout,
            )
            return self._written

    def open(self) -> BinaryIO:
        """A reader from the start (the temporary file, or the blob once it is committed)."""
        with self._cond:
            if self._failed:
                raise FileNotFoundError(f"the blob being written to {self._tmp} was abandoned")
            path = self._tmp if self._digest is None else self._final(self._digest)
            return path.open("rb")

    def _grew(self, written: int) -> None:
        with self._cond:
            self._written = written
            self._cond.notify_all()

    @contextlib.contextmanager
    def _committing(self) -> Iterator[Callable[[Digest], None]]:
        # The rename happens under the lock, so open() never looks for a file that just moved.
        with self._cond:

            def done(digest: Digest) -> None:
                self._digest = digest
                self._cond.notify_all()

            yield done

    def _fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()


class BlobWriter:
    """A file-like sink that hashes what it is given and becomes a blob on ``commit()``.

    Use it as a context manager: leaving the block without committing (an exception) deletes
    the temporary file, so no partial blob is ever visible. With ``watch``, the blob can be
    followed while it is written (see GrowingBlob).
    """

    def __init__(
        self,
        layout: Layout,
        expected: Digest | None = None,
        watch: Callable[[GrowingBlob], None] | None = None,
    ) -> None:
        self._layout = layout
        self._expected = expected
        self._hash = hashlib.sha256()
        self.size = 0
        try:
            fd, tmp = tempfile.mkstemp(dir=layout.blob_dir, prefix=".ingest-", suffix=".tmp")
        except OSError as exc:  # a cache made by another user, no inodes left, no descriptors
            raise layout.write_error(exc) from None
        # Held until the blob is committed or removed: a concurrent skiff opening the cache
        # removes only temporaries whose writer is gone (see remove_abandoned).
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._tmp = Path(tmp)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._done = False
        self._growing: GrowingBlob | None = None
        self._announced = 0
        if watch is not None:
            self._growing = GrowingBlob(self._tmp, layout.path)
            try:
                watch(self._growing)
            except BaseException:
                self.abort()  # no one will enter the with-block that would remove the file
                raise

    def write(self, data: bytes | bytearray) -> int:
        self._hash.update(data)
        try:
            self._file.write(data)
            self.size += len(data)
            if self._growing is not None and self.size - self._announced >= GrowingBlob.STEP:
                self._file.flush()
                self._announced = self.size
                self._growing._grew(self.size)
        except OSError as exc:
            raise self._layout.write_error(exc) from None
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> Digest:
        """Finishes the blob; raises BuildFailed if an expected digest was given and differs."""
        digest = Digest(self._hash.hexdigest())
        try:
            if self._expected is not None and digest != self._expected:
                raise BuildFailed(
                    f"content does not match its digest: expected {self._expected}, got {digest}",
                    "the source changed or was corrupted while being read; try again",
                )
            self._file.flush()
            if self._growing is not None:
                self._growing._grew(self.size)  # readers may send the tail during the fsync
            os.fsync(self._file.fileno())
            # Blobs are immutable; read-only also protects the cache from edits through hardlinks.
            os.fchmod(self._file.fileno(), 0o444)
            with contextlib.ExitStack() as stack:
                if self._growing is not None:
                    done = stack.enter_context(self._growing._committing())
                os.replace(self._tmp, self._layout.path(digest))
                if self._growing is not None:
                    done(digest)
            self._file.close()  # the lock goes only now: the temporary is never unheld
            _fsync_dir(self._layout.blob_dir)
        except OSError as exc:
            self.abort()
            raise self._layout.write_error(exc) from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        return digest

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._growing is not None:
            self._growing._fail()
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op after commit()


class Layout:
    """An OCI image layout directory used as a content-addressed store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"

    @classmethod
    def open(cls, root: Path) -> Layout:
        """Opens ``root`` as a layout, creating an empty one if the folder is new or empty."""
        root = root.expanduser()
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"{root} is not a folder", "choose a folder for the OCI layout")
        if root.is_dir() and not (root / "oci-layout").exists() and _foreign_entries(root):
            raise InvalidInput(
                f"{root} is not an OCI image layout (no oci-layout file) and is not empty",
                "choose an empty or new folder",
            )
        layout = cls(root)
        try:
            layout.blob_dir.mkdir(parents=True, exist_ok=True)
            if not (root / "oci-layout").exists():
                write_atomic(root / "oci-layout", _LAYOUT_MARKER)
            if not (root / "index.json").exists():
                write_atomic(root / "index.json", Index(()).to_bytes())
            layout._remove_stale_temporaries()
        except OSError as exc:
            raise BuildFailed(
                f"cannot create the OCI layout at {root}: {exc.strerror}",
                "check the folder's permissions, or set SKIFF_CACHE_DIR to a writable folder",
            ) from None
        return layout

    def _remove_stale_temporaries(self) -> None:
        # Left by a process killed mid-write: its lock died with it. A live writer's are kept.
        remove_abandoned(self.blob_dir, ".ingest-*.tmp", os.unlink)

    # -- blobs ---------------------------------------------------------------------------------

    def write_error(self, exc: OSError) -> BuildFailed:
        """The error to report when the disk refuses a write (full, read-only, permissions)."""
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = (
                "the cache is not writable by you (made by another user, with sudo?): give it "
                "back to your user, or set SKIFF_CACHE_DIR to a folder of yours"
            )
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "free some disk space, or set SKIFF_CACHE_DIR to a folder on a larger disk"
        else:
            hint = "check the disk and SKIFF_CACHE_DIR, then run the command again"
        return BuildFailed(f"cannot write to {self.root}: {exc.strerror or exc}", hint)

    def path(self, digest: Digest) -> Path:
        return self.blob_dir / digest.hex

    def has(self, digest: Digest, size: int | None = None) -> bool:
        """True if the blob is present (and, when ``size`` is given, has that size)."""
        try:
            st = self.path(digest).stat()
        except OSError:
            return False
        return size is None or st.st_size == size

    def writer(
        self,
        expected: Digest | None = None,
        watch: Callable[[GrowingBlob], None] | None = None,
    ) -> BlobWriter:
        return BlobWriter(self, expected, watch)

    def ingest(self, chunks: Iterable[bytes], expected: Digest | None = None) -> tuple[Digest, int]:
        """Streams chunks into a blob while hashing them; memory use does not grow with size.

        With ``expected``, content that does not hash to it is refused, and if that blob is
        already stored the chunks are not consumed at all.
        """
        if expected is not None and self.has(expected):
            # Already stored: content addressing makes reading the source again pointless.
            return expected, self.path(expected).stat().st_size
        with self.writer(expected) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit(), w.size

    def write_bytes(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        if not self.has(digest, len(data)):
            self.ingest([data], digest)
        return digest

    def write_json(self, media_type: str, data: bytes) -> Descriptor:
        """Stores a manifest/config/index document and returns its descriptor."""
        return Descriptor(media_type, self.write_bytes(data), len(data))

    def read_bytes(self, digest: Digest) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BuildFailed(f"blob {digest} is missing from {self.root}") from None

    @contextlib.contextmanager
    def open_blob(self, digest: Digest) -> Iterator[IO[bytes]]:
        try:
            f = self.path(digest).open("rb")
        except FileNotFoundError:
            raise BuildFailed(f"blob {digest} is missing from {self.root}") from None
        with f:
            yield f

    def verify(self, digest: Digest) -> bool:
        """Re-hashes a blob: False if it is missing or its content no longer matches its name."""
        h = hashlib.sha256()
        try:
            with self.path(digest).open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError:
            return False
        return h.hexdigest() == digest.hex

    # -- index.json ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises read-modify-write of index.json between concurrent skiff processes.
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def index(self) -> Index:
        try:
            return Index.from_bytes((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return Index(())

    def tag(self, name: str, descriptor: Descriptor) -> None:
        """Names an image (manifest or index descriptor) in index.json, replacing that name."""
        tagged = descriptor.with_annotations(**{REF_NAME_ANNOTATION: name})
        with self._locked():
            kept = tuple(d for d in self.index().manifests if _name_of(d) != name)
            write_atomic(self.root / "index.json", Index((*kept, tagged)).to_bytes())

    def resolve(self, name: str) -> Descriptor | None:
        """The descriptor tagged ``name`` in index.json, or None."""
        for d in self.index().manifests:
            if _name_of(d) == name:
                return d
        return None

    def closure(self, descriptor: Descriptor) -> list[Descriptor]:
        """Every blob an image needs: the manifest (or index and its manifests), configs, layers."""
        out = [descriptor]
        if descriptor.media_type in INDEX_TYPES:
            for child in Index.from_bytes(self.read_bytes(descriptor.digest)).manifests:
                out.extend(self.closure(child))
        elif descriptor.media_type in MANIFEST_TYPES:
            manifest = Manifest.from_bytes(self.read_bytes(descriptor.digest))
            out.append(manifest.config)
            out.extend(manifest.layers)
        return out

    def write_image(
        self, config: ImageConfig, layers: Sequence[Descriptor], name: str | None = None
    ) -> Descriptor:
        """Stores the config and the manifest of an image whose layers are already stored.

        ``layers`` are bottom first and must match ``config``'s diff_ids; with ``name`` the image
        is also tagged in index.json. Returns the manifest's descriptor.
        """
        if len(layers) != len(config.diff_ids):
            raise BuildFailed(
                f"the image has {len(layers)} layers but its config lists {len(config.diff_ids)}"
            )
        missing = [str(d.digest) for d in layers if not self.has(d.digest, d.size)]
        if missing:
            raise BuildFailed(f"layers missing from the cache {self.root}: {', '.join(missing)}")
        config_desc = self.write_json(OCI_CONFIG, config.to_bytes())
        manifest = Manifest(config_desc, tuple(layers))
        descriptor = self.write_json(manifest.media_type, manifest.to_bytes())
        if name is not None:
            self.tag(name, descriptor)
        return descriptor

    def export(self, name: str, dest: Path) -> Descriptor:
        """Writes the image tagged ``name`` into ``dest`` as a standard OCI layout.

        Only that image's blobs are written, hard-linked when ``dest`` is on the same filesystem
        (instant, no extra space) and copied otherwise. An existing layout at ``dest`` is added to.
        """
        descriptor = self.resolve(name)
        if descriptor is None:
            raise InvalidInput(f"no image named {name!r} in {self.root}", "build it first")
        target = Layout.open(dest)
        for blob in self.closure(descriptor):
            src = self.path(blob.digest)
            if target.has(blob.digest, blob.size):
                continue
            if not self.has(blob.digest, blob.size):
                raise BuildFailed(
                    f"blob {blob.digest} is missing from the cache {self.root}",
                    "rebuild the image (the cache was cleaned or damaged)",
                )
            try:
                _link_or_copy(src, target.path(blob.digest))
            except OSError as exc:
                raise target.write_error(exc) from None
        target.tag(name, _untagged(descriptor))
        return descriptor


def _name_of(descriptor: Descriptor) -> str | None:
    return (descriptor.annotations or {}).get(REF_NAME_ANNOTATION)


def _untagged(descriptor: Descriptor) -> Descriptor:
    rest = {k: v for k, v in (descriptor.annotations or {}).items() if k != REF_NAME_ANNOTATION}
    return Descriptor(
        descriptor.media_type, descriptor.digest, descriptor.size, rest or None, descriptor.platform
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".export-{dst.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        # Another filesystem (EXDEV) or links not allowed: copy, keeping constant memory.
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)
    os.replace(tmp, dst)
