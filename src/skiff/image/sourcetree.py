"""What of the model folder goes into the image, and in which layer.

The folder is walked without ever following a symlink: a symlink whose target stays inside the
folder is kept as a symlink (absolute targets are rewritten relative, so they still resolve in the
image), one pointing outside is skipped and reported. ``.dockerignore`` is honoured with Docker's
semantics, after a few built-in exclusions that never belong in an image (a user's ``!`` line can
re-include them):

* ``.git`` and ``**/.git``: history, often larger than the code;
* ``.cog``: Cog's own scratch folder;
* ``**/__pycache__`` and ``**/*.pyc``: host bytecode (it embeds mtimes: not reproducible);
* ``.venv``: a host virtualenv is for the wrong platform; dependencies come from ``cog.yaml``;
* ``**/.skiff-requirements-*.txt``: skiff's own copy of the requirements while uv runs (beside
  the original, for relative paths in it), should a killed build leave one behind.

A file name that is not UTF-8 (Linux names are bytes: an old archive, a Windows share) goes into
the image byte for byte, like any other file: the tar header carries the raw bytes (PAX
``hdrcharset=BINARY``), so the file has the same name in the image as in the folder.

A folder that cannot be listed or a file that cannot be read fails the build (exit 4) with its
path and the fix (make it readable, or leave it out in ``.dockerignore``): a warning would let an
image without those files be pushed as if whole. Files are read later, when their layer is
written, and only if each is still the very file scanned (same device and inode, a regular
file, opened without following a symlink): one swapped meanwhile is a build error, never
content from outside the folder and never a FIFO that hangs the build.

Files are split into *weights* (large data files) and *code*. Weights go in uncompressed layers
(they do not compress, and gzip would only cost time), apart from the code, so that editing code
never changes a weights layer and vice versa. Each weights file of 256 MiB or more gets a layer of
its own (parallel uploads, and one changed shard re-uploads only itself); smaller ones are packed in
path order into layers of about 1 GiB.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path

from skiff.errors import BuildFailed, InvalidInput
from skiff.image.dockerignore import DockerIgnore
from skiff.image.layers import Entry, open_source, unreadable

ALWAYS_EXCLUDED = (
    ".git",
    "**/.git",
    ".cog",
    "**/__pycache__",
    "**/*.pyc",
    ".venv",
    "**/.skiff-requirements-*.txt",
)

WEIGHT_EXTENSIONS = frozenset(
    [
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".gguf",
        ".ggml",
        ".h5",
        ".hdf5",
        ".npz",
        ".npy",
        ".pkl",
        ".pickle",
        ".msgpack",
        ".tflite",
        ".pb",
        ".joblib",
        ".model",
        ".params",
    ]
)
# Source files stay in the code layer even when large (a generated module, a vendored script).
CODE_EXTENSIONS = frozenset(
    [
        ".py",
        ".pyi",
        ".pyx",
        ".pxd",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cu",
        ".cuh",
        ".sh",
        ".js",
        ".ts",
        ".go",
        ".rs",
        ".yaml",
        ".yml",
        ".toml",
    ]
)

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Thresholds:
    """When a file counts as weights, and how weights are grouped into layers."""

    any_file: int = 1 * MiB  # a non-code file this large is weights
    weight_extension: int = 64 * 1024  # a file with a weights extension this large is weights
    own_layer: int = 256 * MiB  # a weights file this large gets its own layer
    pack_limit: int = 1 * GiB  # smaller weights files are packed into layers of about this size


@dataclass(frozen=True)
class Skipped:
    """A path left out of the image for a reason the user should hear about."""

    path: str
    reason: str


@dataclass
class SourcePlan:
    """The model folder, sorted into layers: code (gzip) and groups of weights (uncompressed)."""

    code: list[Entry] = field(default_factory=list)
    weights: list[list[Entry]] = field(default_factory=list)
    secret_like: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


_SECRET_NAMES = frozenset(
    [
        ".env",
        ".netrc",
        "_netrc",
        ".pypirc",
        ".npmrc",
        ".git-credentials",
        ".htpasswd",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
    ]
)
_SECRET_SUFFIXES = (".aws/credentials", ".docker/config.json", ".kube/config", ".p12", ".pfx")
_HARMLESS_ENV = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist"})
_KEY_SUFFIXES = (".pem", ".key")


def looks_secret(rel: str, path: Path, size: int) -> bool:
    """True for files that usually hold credentials: worth a warning before they ship."""
    name = posixpath.basename(rel)
    if name in _SECRET_NAMES or rel.endswith(_SECRET_SUFFIXES):
        return True
    if name.startswith(".env.") and name not in _HARMLESS_ENV:
        return True
    if name.endswith(_KEY_SUFFIXES) and size <= 64 * 1024:
        try:
            with open_source(path) as f:  # never a FIFO swapped in (a hang) or a link out
                return b"PRIVATE KEY" in f.read(64 * 1024)
        except (OSError, BuildFailed):
            return False
    return False


def is_weights(rel: str, size: int, thresholds: Thresholds) -> bool:
    ext = posixpath.splitext(rel)[1].lower()
    if ext in WEIGHT_EXTENSIONS and size >= thresholds.weight_extension:
        return True
    return ext not in CODE_EXTENSIONS and size >= thresholds.any_file


def file_mode(st_mode: int) -> int:
    """0755 if the owner may execute, else 0644: host umask and owner never reach the image."""
    return 0o755 if st_mode & stat.S_IXUSR else 0o644


def _symlink_target(root: Path, rel: str, full: Path) -> str | None:
    """The link text to store, or None if the link leads out of the folder."""
    text = os.readlink(full)
    resolved = Path(os.path.realpath(full))
    if resolved != root and root not in resolved.parents:
        return None
    if not os.path.isabs(text):
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), text))
        if lexical != ".." and not lexical.startswith("../"):
            return text
    # Absolute, or relative via the folder's own name: rewrite so it resolves in the image too.
    return os.path.relpath(resolved, root / posixpath.dirname(rel))


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def group_weights(files: list[tuple[Entry, int]], thresholds: Thresholds) -> list[list[Entry]]:
    """Deterministic grouping: big files alone, then the rest packed in path order."""
    alone: list[list[Entry]] = []
    packed: list[list[Entry]] = []
    current: list[Entry] = []
    current_size = 0
    for entry, size in sorted(files, key=lambda f: f[0].path):
        if size >= thresholds.own_layer:
            alone.append([entry])
            continue
        current.append(entry)
        current_size += size
        if current_size >= thresholds.pack_limit:
            packed.append(current)
            current, current_size = [], 0
    if current:
        packed.append(current)
    return alone + packed


def plan_source_layers(
    folder: Path,
    *,
    image_root: str = "/src",
    extra_excludes: tuple[str, ...] = (),
    thresholds: Thresholds | None = None,
) -> SourcePlan:
    """Walks ``folder`` and decides which file goes into which layer, at ``image_root``/<path>.

    ``extra_excludes`` are further ``.dockerignore``-style patterns (e.g. an output folder that
    lies inside the model folder); like the built-in ones, the user's ``!`` lines override them.
    """
    thresholds = thresholds or Thresholds()
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder", "run skiff in the folder with cog.yaml")
    root = Path(os.path.realpath(folder))
    ignore = DockerIgnore.of(ALWAYS_EXCLUDED + extra_excludes) + DockerIgnore.load(root)

    plan = SourcePlan()
    weights: list[tuple[Entry, int]] = []
    # (folder, excluded): an excluded folder is walked only for what a "!" line may re-include.
    stack: list[tuple[str, bool]] = [("", False)]
    while stack:
        rel_dir, dir_excluded = stack.pop()
        try:
            with os.scandir(root / rel_dir) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            if dir_excluded:  # left out anyway, unless a "!" line wanted something in it
                plan.skipped.append(Skipped(rel_dir, f"cannot list: {exc.strerror}"))
                continue
            # Not a warning: an image without this folder's files would be pushed as if whole.
            raise unreadable(root / rel_dir, exc) from None
        for child in children:
            rel = posixpath.join(rel_dir, child.name) if rel_dir else child.name
            excluded = ignore.excluded(rel)
            dest = posixpath.join(image_root, rel)
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:  # vanished or unreadable while we walked
                plan.skipped.append(Skipped(rel, f"cannot read: {exc.strerror}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if not excluded or ignore.may_reinclude_below(rel):
                    stack.append((rel, excluded))
                if not excluded and _is_empty_dir(child.path):
                    # Kept so code that expects it finds it; other folders come from their files.
                    plan.code.append(Entry.dir(dest))
                continue
            if excluded:
                continue
            full = Path(child.path)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = _symlink_target(root, rel, full)
                except OSError as exc:
                    plan.skipped.append(Skipped(rel, f"cannot read the link: {exc.strerror}"))
                    continue
                if target is None:
                    plan.skipped.append(Skipped(rel, "symlink pointing outside the folder"))
                    continue
                plan.code.append(Entry.symlink(dest, target))
            elif stat.S_ISREG(st.st_mode):
                if not os.access(full, os.R_OK):
                    raise unreadable(full, PermissionError(errno.EACCES, "permission denied"))
                identity = (st.st_dev, st.st_ino)
                entry = Entry.file(dest, full, file_mode(st.st_mode), identity=identity)
                if looks_secret(rel, full, st.st_size):
                    plan.secret_like.append(rel)
                if is_weights(rel, st.st_size, thresholds):
                    weights.append((entry, st.st_size))
                else:
                    plan.code.append(entry)
            else:
                plan.skipped.append(Skipped(rel, "not a regular file, directory or symlink"))
    plan.code.sort(key=lambda e: e.path)
    plan.weights = group_weights(weights, thresholds)
    plan.secret_like.sort()
    plan.skipped.sort(key=lambda s: s.path)
    return plan
