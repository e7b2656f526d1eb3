"""The OCI layout cache: atomic blobs, verification, tags, and export."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.digest import Digest
from skiff.errors import BuildFailed, InvalidInput
from skiff.image.layout import Layout, cache_dir, default_layout
from skiff.image.oci import OCI_CONFIG, OCI_LAYER, Descriptor, ImageConfig, Manifest, Platform


def _leftovers(layout: Layout) -> list[str]:
    return [p.name for p in layout.blob_dir.iterdir() if p.name.startswith(".")]


def test_open_creates_a_standard_layout(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "lay")
    assert json.loads((layout.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((layout.root / "index.json").read_text())["manifests"] == []
    assert layout.blob_dir.is_dir()


def test_open_refuses_a_folder_with_other_content(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an OCI image layout"):
        Layout.open(tmp_path)


def test_default_layout_follows_skiff_cache_dir(hermetic_env: Path) -> None:
    assert cache_dir() == hermetic_env
    assert default_layout().root == hermetic_env / "oci"


def test_write_and_verify(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    digest = layout.write_bytes(b"hello")
    assert digest == Digest.of(b"hello")
    assert layout.has(digest) and layout.has(digest, 5) and not layout.has(digest, 6)
    assert layout.read_bytes(digest) == b"hello"
    assert layout.verify(digest)
    assert layout.path(digest).stat().st_mode & 0o222 == 0  # blobs are read-only


def test_verify_detects_corruption_and_absence(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    digest = layout.write_bytes(b"precious weights")
    path = layout.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"precious weighTs")
    assert not layout.verify(digest)
    assert not layout.verify(Digest.of(b"never written"))


def test_failed_ingest_leaves_no_partial_blob(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)

    def chunks() -> Iterator[bytes]:
        yield b"a" * 100_000
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        layout.ingest(chunks())
    assert list(layout.blob_dir.iterdir()) == []


def test_ingest_with_a_wrong_expected_digest_stores_nothing(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    wrong = Digest.of(b"something else")
    with pytest.raises(BuildFailed, match="does not match"):
        layout.ingest([b"content"], expected=wrong)
    assert not layout.has(wrong)
    assert list(layout.blob_dir.iterdir()) == []


def test_ingest_streams_and_reports_size(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    digest, size = layout.ingest(b"x" * 1000 for _ in range(50))
    assert size == 50_000
    assert digest == Digest.of(b"x" * 50_000)
    assert _leftovers(layout) == []


def _image(layout: Layout, payload: bytes) -> Descriptor:
    layer = Descriptor(OCI_LAYER, layout.write_bytes(payload), len(payload))
    config = layout.write_json(OCI_CONFIG, b'{"architecture":"amd64","os":"linux"}')
    manifest = Manifest(config, (layer,))
    return layout.write_json(manifest.media_type, manifest.to_bytes())


def test_tag_replaces_and_resolve_finds(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    first, second = _image(layout, b"one"), _image(layout, b"two")
    layout.tag("model:latest", first)
    layout.tag("other", first)
    layout.tag("model:latest", second)
    latest, other = layout.resolve("model:latest"), layout.resolve("other")
    assert latest is not None and latest.digest == second.digest
    assert other is not None and other.digest == first.digest
    assert layout.resolve("missing") is None
    assert len(layout.index().manifests) == 2


def test_export_hardlinks_only_that_images_blobs(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    wanted, unrelated = _image(layout, b"wanted layer"), _image(layout, b"unrelated layer")
    layout.tag("model", wanted)
    layout.tag("unrelated", unrelated)
    dest = tmp_path / "out"
    layout.export("model", dest)
    exported = Layout(dest)
    blobs = {p.name for p in exported.blob_dir.iterdir()}
    needed = {d.digest.hex for d in layout.closure(wanted)}
    assert blobs == needed and len(needed) == 3
    for name in blobs:
        assert (exported.blob_dir / name).stat().st_ino == (layout.blob_dir / name).stat().st_ino
        assert exported.verify(Digest(name))
    assert exported.resolve("model") is not None
    assert exported.resolve("unrelated") is None


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs a second filesystem to prove the copy fallback",
)
def test_export_copies_across_filesystems(tmp_path: Path) -> None:
    import tempfile

    layout = Layout.open(tmp_path / "cache")
    layout.tag("model", _image(layout, b"layer"))
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other_fs:
        dest = Path(other_fs) / "out"
        layout.export("model", dest)
        exported = Layout(dest)
        assert all(exported.verify(Digest(p.name)) for p in exported.blob_dir.iterdir())
        assert len(list(exported.blob_dir.iterdir())) == 3


def test_export_unknown_name_and_missing_blob(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "cache")
    with pytest.raises(InvalidInput, match="no image named"):
        layout.export("nope", tmp_path / "out")
    image = _image(layout, b"layer")
    layout.tag("model", image)
    manifest = Manifest.from_bytes(layout.read_bytes(image.digest))
    layout.path(manifest.layers[0].digest).unlink()
    with pytest.raises(BuildFailed, match="missing"):
        layout.export("model", tmp_path / "out2")


def test_write_image_checks_layers_against_the_config(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    layer = Descriptor(OCI_LAYER, layout.write_bytes(b"tar"), 3)
    config = ImageConfig.for_platform(Platform.parse("linux/amd64")).with_layers(
        [layer.digest], "x"
    )
    with pytest.raises(BuildFailed, match="1 layers but its config lists 2"):
        layout.write_image(config.with_layers([layer.digest], "y"), [layer])
    ghost = Descriptor(OCI_LAYER, Digest.of(b"not stored"), 10)
    with pytest.raises(BuildFailed, match="missing"):
        layout.write_image(config, [ghost])
    manifest = layout.write_image(config, [layer], "m")
    assert layout.closure(manifest)[1:] == [config.descriptor(), layer]


def test_open_removes_only_stale_temporaries(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    stale, fresh = layout.blob_dir / ".ingest-old.tmp", layout.blob_dir / ".ingest-new.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1, 1))
    Layout.open(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_a_cache_that_refuses_new_files_is_a_build_error_not_a_crash(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "oci")
    # The folder for new blobs is not a folder any more (a real OS error, ENOTDIR, as EACCES
    # would be for a cache made by another user, or ENOSPC when no inode is left).
    shutil.rmtree(layout.blob_dir)
    layout.blob_dir.write_text("not a folder")
    with pytest.raises(BuildFailed, match="cannot write to") as failed:
        layout.write_bytes(b"a layer")
    assert failed.value.hint is not None and "SKIFF_CACHE_DIR" in failed.value.hint
