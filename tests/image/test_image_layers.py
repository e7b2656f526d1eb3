"""Reproducible layers: same inputs, same digests; streaming; the stat cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from skiff.errors import BuildFailed
from skiff.image import layers
from skiff.image.layers import Entry, Layer, StatCache, build_layer
from skiff.image.layout import GrowingBlob, Layout
from skiff.image.oci import OCI_LAYER, OCI_LAYER_GZIP
from skiff.image.sourcetree import Thresholds, plan_source_layers

SMALL = Thresholds(any_file=4096, weight_extension=1024, own_layer=1 << 20, pack_limit=1 << 20)


def _make_model(folder: Path, *, mtime: int, owner: int | None, mode: int) -> None:
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / "predict.py").write_text("def predict():\n    return 1\n")
    (folder / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "sub" / "deep" / "util.py").write_text("X = 1\n")
    (folder / "sub" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "weights.bin").write_bytes(b"w" * 10_000)
    (folder / "empty").mkdir()
    (folder / "link.py").symlink_to("predict.py")
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_symlink():
            continue
        if path.is_file():
            path.chmod(0o755 if path.name == "run.sh" else mode)
        if owner is not None:
            os.chown(path, owner, owner)
        os.utime(path, (mtime, mtime))


def _layers(folder: Path, layout: Layout) -> tuple[Layer, list[Layer]]:
    plan = plan_source_layers(folder, thresholds=SMALL)
    code = build_layer(plan.code, layout, "gzip")
    weights = [build_layer(group, layout, "none") for group in plan.weights]
    return code, weights


def test_same_inputs_same_digests_across_folders_times_owners_and_umask(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "model", tmp_path / "elsewhere" / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    _make_model(a, mtime=1_000_000, owner=None, mode=0o644)
    _make_model(b, mtime=1_700_000_000, owner=1234 if os.geteuid() == 0 else None, mode=0o600)
    code_a, weights_a = _layers(a, Layout.open(tmp_path / "cache-a"))
    code_b, weights_b = _layers(b, Layout.open(tmp_path / "cache-b"))
    assert code_a == code_b
    assert weights_a == weights_b
    assert len(weights_a) == 1
    assert code_a.descriptor.media_type == OCI_LAYER_GZIP
    assert weights_a[0].descriptor.media_type == OCI_LAYER
    assert weights_a[0].descriptor.digest == weights_a[0].diff_id


def test_known_digest_of_a_fixed_tar() -> None:
    """A golden value: the tar format itself must not drift between machines or versions."""
    layout_dir = Path(os.environ["SKIFF_CACHE_DIR"]) / "golden"
    layer = build_layer(
        [
            Entry.file("/src/predict.py", b"print('hi')\n"),
            Entry.file("/src/run.sh", b"#!/bin/sh\n", 0o755),
            Entry.symlink("/src/link", "predict.py"),
            Entry.dir("/src/empty"),
        ],
        Layout.open(layout_dir),
        "none",
    )
    assert str(layer.diff_id) == GOLDEN_DIFF_ID


GOLDEN_DIFF_ID = "sha256:10c8480ecbcd5e07dbda1dbfb9bda5bae60af262b78cf657ac1dce19fdf8257d"


def test_known_digest_of_a_fixed_gzip_layer() -> None:
    """The compressed digest too: it names the layer in a registry, so two machines building
    the same code must agree on it, whatever zlib their Python was linked with."""
    layout_dir = Path(os.environ["SKIFF_CACHE_DIR"]) / "golden-gzip"
    source = "".join(f"WORDS_{i} = {i * 31 % 1009}\n" for i in range(150_000)).encode()
    layer = build_layer(
        [Entry.file("/src/predict.py", b"print('hi')\n"), Entry.file("/src/table.py", source)],
        Layout.open(layout_dir),
        "gzip",
    )
    assert len(source) > 2 << 20  # more than two gzip members
    assert str(layer.descriptor.digest) == GOLDEN_GZIP_DIGEST


GOLDEN_GZIP_DIGEST = "sha256:2db94b11fdab3d397911f7e9b389eb8c0d44b925233ad6f9efe16e1d616f4cf8"


def _members(layout: Layout, layer: Layer) -> list[tarfile.TarInfo]:
    data = layout.read_bytes(layer.descriptor.digest)
    if layer.descriptor.media_type == OCI_LAYER_GZIP:
        assert data[4:8] == b"\0\0\0\0"  # gzip mtime
        assert data[3] & 0x08 == 0  # no file name in the gzip header
        data = gzip.decompress(data)
    assert hashlib.sha256(data).hexdigest() == layer.diff_id.hex
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_headers_carry_nothing_from_the_host(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("data")
    os.utime(src, (123456789, 123456789))
    layout = Layout.open(tmp_path / "cache")
    layer = build_layer(
        [Entry.file("/src/f.txt", src), Entry.symlink("/src/a/l", "../f.txt")], layout, "gzip"
    )
    members = _members(layout, layer)
    assert [m.name for m in members] == ["src", "src/a", "src/a/l", "src/f.txt"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.pax_headers == {}
    assert members[0].isdir() and members[0].mode == 0o755
    assert members[2].issym() and members[2].linkname == "../f.txt"


def test_invalid_entries_are_refused(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    with pytest.raises(BuildFailed, match="two layer entries"):
        build_layer([Entry.file("/a", b"1"), Entry.file("a", b"2")], layout)
    with pytest.raises(BuildFailed, match="invalid path"):
        build_layer([Entry.file("/../etc/passwd", b"x")], layout)
    with pytest.raises(BuildFailed, match="not a directory"):
        build_layer([Entry.file("/a", b"1"), Entry.file("/a/b", b"2")], layout)
    with pytest.raises(BuildFailed, match="cannot read"):
        build_layer([Entry.file("/a", tmp_path / "missing")], layout)
    assert [p for p in layout.blob_dir.iterdir()] == []  # no partial blob from the failure


def test_large_files_are_streamed(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(1 << 20))
    layout = Layout.open(tmp_path / "cache")
    tracemalloc.start()
    try:
        layer = build_layer([Entry.file("/src/big.bin", big)], layout, "none")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak Python memory {peak} bytes for a 32 MiB file"
    assert layer.descriptor.size > 32 << 20
    assert layout.verify(layer.descriptor.digest)


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_stat_cache_skips_reading_unchanged_files(tmp_path: Path) -> None:
    big = tmp_path / "model.safetensors"
    big.write_bytes(b"\1" * (8 << 20))
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    entries = [Entry.file("/src/model.safetensors", big)]
    first = build_layer(entries, layout, "none", stat_cache=cache)
    before = _bytes_read()
    second = build_layer(entries, layout, "none", stat_cache=cache)
    assert second == first
    assert _bytes_read() - before < 1 << 20, "the unchanged file was read again"


def test_stat_cache_notices_same_size_edits_with_restored_mtime(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"a" * 1000)
    st = src.stat()
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    first = build_layer([Entry.file("/w.bin", src)], layout, "none", stat_cache=cache)
    src.write_bytes(b"b" * 1000)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = build_layer([Entry.file("/w.bin", src)], layout, "none", stat_cache=cache)
    assert second.diff_id != first.diff_id


def test_stat_cache_entries_of_another_layer_format_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade that changes a layer's bytes (its gzip, say), unchanged inputs are
    written again: reusing the old layer would keep a digest other machines no longer make."""
    src = tmp_path / "table.py"
    src.write_bytes(b"x = 1\n" * 200_000)
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    entries = [Entry.file("/src/table.py", src)]
    monkeypatch.setattr(layers, "_FORMAT_VERSION", 1)
    old = build_layer(entries, layout, "gzip", stat_cache=cache)
    cache.put("pydeps-key", old)  # keys made elsewhere (dependencies, build steps) as well
    monkeypatch.setattr(layers, "_FORMAT_VERSION", 2)
    assert cache.get("pydeps-key", layout) is None
    before = _bytes_read()
    build_layer(entries, layout, "gzip", stat_cache=cache)
    assert _bytes_read() - before >= src.stat().st_size, "the older format's entry was reused"
    before = _bytes_read()
    build_layer(entries, layout, "gzip", stat_cache=cache)
    assert _bytes_read() - before < src.stat().st_size, "the same format's entry was not reused"


def test_stat_cache_rebuilds_when_the_blob_is_gone(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"a" * 1000)
    layout = Layout.open(tmp_path / "cache")
    cache = StatCache(tmp_path / "stat")
    first = build_layer([Entry.file("/w.bin", src)], layout, "none", stat_cache=cache)
    layout.path(first.descriptor.digest).unlink()
    again = build_layer([Entry.file("/w.bin", src)], layout, "none", stat_cache=cache)
    assert again == first
    assert layout.verify(first.descriptor.digest)


def test_weights_and_code_layers_change_independently(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    _make_model(folder, mtime=1_000_000, owner=None, mode=0o644)
    layout = Layout.open(tmp_path / "cache")
    code, weights = _layers(folder, layout)

    (folder / "weights.bin").write_bytes(b"W" * 10_000)
    code2, weights2 = _layers(folder, layout)
    assert code2 == code
    assert weights2 != weights

    (folder / "predict.py").write_text("def predict():\n    return 2\n")
    code3, weights3 = _layers(folder, layout)
    assert code3 != code2
    assert weights3 == weights2


def test_long_and_non_ascii_names_are_reproducible(tmp_path: Path) -> None:
    name = "/src/" + "/".join(["très-long-dossier"] * 12) + "/modèle.py"
    digests = set()
    for i in range(2):
        layout = Layout.open(tmp_path / f"cache{i}")
        layer = build_layer([Entry.file(name, b"x = 1\n")], layout, "gzip")
        digests.add(layer.descriptor.digest)
        names = [m.name for m in _members(layout, layer)]
        assert names[-1] == name.lstrip("/")
    assert len(digests) == 1


def test_a_layer_stops_at_its_next_read_once_asked_and_leaves_nothing(tmp_path: Path) -> None:
    """Weights layers written side by side stop when one of them fails (the builder sets the
    event): the write ends with BuildFailed, and neither a blob nor a temporary file remains."""
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB to read, none of it on disk
    layout = Layout.open(tmp_path / "oci")
    stop = threading.Event()
    followed: list[GrowingBlob] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            build_layer(
                [Entry.file("/src/big.bin", big)], layout, "none", watch=followed.append, stop=stop
            )
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 30
    while not followed:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    followed[0].wait(8 << 20, timeout=30)  # some of it is written
    stop.set()
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert [type(e) for e in errors] == [BuildFailed]
    assert "stopped" in str(errors[0])
    assert followed[0].failed
    assert list(layout.blob_dir.iterdir()) == []


def test_a_source_is_read_only_while_it_is_the_regular_file_scanned(tmp_path: Path) -> None:
    source = tmp_path / "code.py"
    source.write_text("x = 1\n")
    st = source.stat()
    with layers.open_source(source, (st.st_dev, st.st_ino)) as f:
        assert f.read() == b"x = 1\n"
    other = tmp_path / "other.py"
    other.write_text("y = 2\n")
    other.replace(source)  # an editor's save: another inode under the same name
    with pytest.raises(BuildFailed, match="another file took its place"):
        layers.open_source(source, (st.st_dev, st.st_ino))
    source.unlink()
    os.mkfifo(source)  # opened as O_PATH only: no wait for a writer
    with pytest.raises(BuildFailed, match="no longer a regular file"):
        layers.open_source(source)
    source.unlink()
    source.symlink_to("/etc/hostname")
    with pytest.raises(BuildFailed, match="a symlink now"):
        layers.open_source(source)


def test_names_that_are_not_utf8_have_keys_of_their_own(tmp_path: Path) -> None:
    """Such a name (held with surrogates) gets a stat-cache key, distinct from the text of its
    escape and from other odd bytes."""
    keys = set()
    for raw in (b"caf\xe9", b"caf\xff", b"caf\\udce9", "caf\u00e9".encode()):
        (tmp_path / os.fsdecode(raw)).write_bytes(b"x")
        path = os.fsdecode(raw)
        keys.add(layers.fingerprint([Entry.file(f"/src/{path}", tmp_path / path)], "gzip"))
    assert len(keys) == 4


def test_hard_links_are_stored_once_and_unpack_as_one_inode(tmp_path: Path) -> None:
    from skiff.image.rootfs import apply_layer

    layout = Layout.open(tmp_path / "oci")
    driver = b"\x7fELF" + os.urandom(200_000)  # incompressible: a copy would double the layer
    entries = [
        Entry.file("/usr/lib/dri/a_dri.so", driver, 0o644),
        Entry.hard_link("/usr/lib/dri/b_dri.so", "/usr/lib/dri/a_dri.so", 0o644),
        Entry.hard_link("/usr/lib/dri/c_dri.so", "/usr/lib/dri/a_dri.so", 0o644),
    ]
    linked = build_layer(entries, layout, "gzip")
    assert linked.descriptor.size < len(driver) * 1.1
    with layout.open_blob(linked.descriptor.digest) as blob, tarfile.open(fileobj=blob) as tar:
        members = {m.name: m for m in tar}
    assert members["usr/lib/dri/b_dri.so"].islnk()
    assert members["usr/lib/dri/b_dri.so"].linkname == "usr/lib/dri/a_dri.so"
    assert build_layer(entries, layout, "gzip") == linked  # reproducible
    root = tmp_path / "root"
    root.mkdir()
    with layout.open_blob(linked.descriptor.digest) as blob:
        apply_layer(blob, root)
    inodes = {(root / f"usr/lib/dri/{n}_dri.so").stat().st_ino for n in "abc"}
    assert len(inodes) == 1
    assert (root / "usr/lib/dri/c_dri.so").read_bytes() == driver


@pytest.mark.parametrize(
    "entries",
    [
        [Entry.hard_link("/a", "/missing")],
        [Entry.dir("/d"), Entry.hard_link("/a", "/d")],
        # The reader must have the target before the link: the link sorts first here.
        [Entry.hard_link("/a", "/b"), Entry.file("/b", b"x")],
    ],
)
def test_hard_links_to_nothing_earlier_in_the_layer_are_refused(
    tmp_path: Path, entries: list[Entry]
) -> None:
    with pytest.raises(BuildFailed, match="hard link"):
        build_layer(entries, Layout.open(tmp_path / "oci"), "gzip")
