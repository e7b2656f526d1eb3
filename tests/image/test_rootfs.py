"""Unpacking layers into a root filesystem: hostile tars stay inside, whiteouts and links work."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from skiff.errors import BuildFailed
from skiff.image.layout import Layout
from skiff.image.oci import OCI_LAYER, OCI_LAYER_GZIP, Descriptor
from skiff.image.rootfs import UnpackReport, apply_layer, unpack_layers


@dataclass
class M:
    """One tar member to write: kind is file | dir | sym | link | chr | fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    uid: int = 0


def tar_bytes(members: list[M], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mode = m.mode
            info.mtime = 1_600_000_000
            info.uid = info.gid = m.uid
            kinds = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "link": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }
            info.type = kinds[m.kind]
            info.linkname = m.link
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                if m.kind == "chr":
                    info.devmajor, info.devminor = 1, 3
                tar.addfile(info)
    data = buf.getvalue()
    return gzip.compress(data) if compress else data


def apply(root: Path, members: list[M], **kw: bool) -> UnpackReport:
    report = UnpackReport()
    apply_layer(io.BytesIO(tar_bytes(members, **kw)), root, report=report)
    return report


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A root to unpack into, and a sibling 'outside' directory that must stay untouched."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("original")
    return root, outside


def untouched(outside: Path) -> bool:
    return (
        sorted(p.name for p in outside.iterdir()) == ["victim"]
        and (outside / "victim").read_text() == "original"
    )


def test_files_dirs_symlinks_hardlinks_and_modes(world: tuple[Path, Path]) -> None:
    root, _ = world
    report = apply(
        root,
        [
            M("./", "dir", mode=0o755),
            M("usr/", "dir", mode=0o755),
            M("usr/bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
            M("usr/lib/libx.so.1", data=b"ELF"),
            M("usr/lib/libx.so", "sym", link="libx.so.1"),
            M("usr/lib/hard", "link", link="usr/lib/libx.so.1"),
            M("etc/ro", "dir", mode=0o555),
            M("etc/ro/file", data=b"x"),
            M("dev/null", "chr"),
            M("run/fifo", "fifo"),
        ],
        compress=True,
    )
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert (root / "usr/bin/tool").stat().st_mode & 0o7777 == 0o4755
    assert os.readlink(root / "usr/lib/libx.so") == "libx.so.1"
    assert (root / "usr/lib/hard").stat().st_ino == (root / "usr/lib/libx.so.1").stat().st_ino
    assert (root / "etc/ro").stat().st_mode & 0o777 == 0o555  # applied after its child
    assert (root / "etc/ro/file").read_bytes() == b"x"
    assert (root / "usr/lib/libx.so.1").stat().st_mtime == 1_600_000_000
    assert report.skipped == ["/dev/null"]  # device nodes are always left out
    assert not (root / "dev/null").exists()
    assert (root / "run/fifo").is_fifo()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is restored only as root")
def test_ownership_restored_as_root(world: tuple[Path, Path]) -> None:
    root, _ = world
    apply(root, [M("home/u/f", data=b"x", uid=1234)])
    assert (root / "home/u/f").stat().st_uid == 1234


def test_dotdot_is_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    with pytest.raises(BuildFailed, match=r"climbs out"):
        apply(root, [M("../outside/victim", data=b"pwned")])
    with pytest.raises(BuildFailed, match=r"climbs out"):
        apply(root, [M("a/../../outside/new", data=b"pwned")])
    assert untouched(outside)


def test_absolute_paths_land_inside_the_root(world: tuple[Path, Path]) -> None:
    root, outside = world
    apply(root, [M(str(outside / "victim"), data=b"pwned")])
    assert untouched(outside)
    assert (root / str(outside / "victim").lstrip("/")).read_bytes() == b"pwned"


@pytest.mark.parametrize("target", ["OUTSIDE", "../../../../../../OUTSIDE", "/../../OUTSIDE"])
def test_writes_through_symlinks_stay_inside(world: tuple[Path, Path], target: str) -> None:
    root, outside = world
    link_target = target.replace("OUTSIDE", str(outside).lstrip("/"))
    if target == "OUTSIDE":
        link_target = str(outside)  # an absolute symlink to the real outside directory
    apply(root, [M("evil", "sym", link=link_target)])
    # A later layer writes through the symlink: it must resolve as if root were "/".
    apply(root, [M("evil/victim", data=b"pwned"), M("evil/new", data=b"pwned")])
    assert untouched(outside)
    inside = root / str(outside).lstrip("/")
    assert (inside / "victim").read_bytes() == b"pwned"


def test_symlink_in_the_same_layer_and_a_loop(world: tuple[Path, Path]) -> None:
    root, outside = world
    apply(root, [M("up", "sym", link="../.."), M("up/outside/victim", data=b"pwned")])
    assert untouched(outside)
    assert (root / "outside/victim").read_bytes() == b"pwned"
    with pytest.raises(BuildFailed, match="too many levels"):
        apply(root, [M("a", "sym", link="b"), M("b", "sym", link="a"), M("a/x", data=b"")])


def test_existing_symlink_at_the_final_component_is_replaced_not_followed(
    world: tuple[Path, Path],
) -> None:
    root, outside = world
    apply(root, [M("f", "sym", link=str(outside / "victim"))])
    apply(root, [M("f", data=b"new")])
    assert untouched(outside)
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"new"


def test_hard_links_must_stay_inside(world: tuple[Path, Path]) -> None:
    root, outside = world
    with pytest.raises(BuildFailed, match="climbs out"):
        apply(root, [M("h", "link", link="../outside/victim")])
    with pytest.raises(BuildFailed, match="not in the image"):
        apply(root, [M("h", "link", link=str(outside / "victim"))])
    # Through a symlink out of the root: resolved inside, where there is nothing.
    apply(root, [M("out", "sym", link=str(outside))])
    with pytest.raises(BuildFailed, match="not in the image"):
        apply(root, [M("h", "link", link="out/victim")])
    # A hard link to a symlink that points out links the symlink, not its target.
    apply(root, [M("s", "sym", link=str(outside / "victim")), M("h2", "link", link="s")])
    assert (root / "h2").is_symlink()
    assert untouched(outside)


def test_whiteouts_and_opaque_directories(world: tuple[Path, Path]) -> None:
    root, outside = world
    apply(
        root,
        [
            M("a/keep", data=b"1"),
            M("a/gone", data=b"1"),
            M("a/dir/sub", data=b"1"),
            M("o/old1", data=b"1"),
            M("o/olddir/x", data=b"1"),
        ],
    )
    apply(
        root,
        [
            M("a/.wh.gone"),
            M("a/.wh.dir"),
            M("a/.wh.never-existed"),
            M("o/", "dir", mode=0o755),
            M("o/.wh..wh..opq"),
            M("o/new", data=b"2"),
            M("missing/.wh.x"),  # a whiteout under nothing is a no-op
        ],
    )
    assert sorted(os.listdir(root / "a")) == ["keep"]
    assert sorted(os.listdir(root / "o")) == ["new"]
    assert not (root / "missing").exists() or not os.listdir(root / "missing")
    # A whiteout that tries to climb out removes nothing outside.
    with pytest.raises(BuildFailed):
        apply(root, [M("../outside/.wh.victim")])
    apply(root, [M("link", "sym", link=str(outside)), M("link/.wh.victim")])
    assert untouched(outside)


def test_opaque_marker_after_this_layers_entries_keeps_them(world: tuple[Path, Path]) -> None:
    root, _ = world
    apply(root, [M("o/old", data=b"1")])
    apply(root, [M("o/new/f", data=b"2"), M("o/.wh..wh..opq")])
    assert sorted(os.listdir(root / "o")) == ["new"]
    assert (root / "o/new/f").read_bytes() == b"2"


def test_type_changes_between_layers(world: tuple[Path, Path]) -> None:
    root, _ = world
    apply(root, [M("x/inner", data=b"1"), M("y", data=b"1")])
    apply(root, [M("x", data=b"now a file"), M("y/inner", data=b"y is a dir now")])
    assert (root / "x").read_bytes() == b"now a file"
    assert (root / "y/inner").read_bytes() == b"y is a dir now"


def test_a_layer_in_several_gzip_members_is_read_to_its_end(world: tuple[Path, Path]) -> None:
    """skiff's own gzip layers are a series of members (reproducible_gzip), as eStargz layers
    are; a reader that stopped after the first member would lose the files after it."""
    root, _ = world
    files = [M(f"data/f{i}", data=bytes([i]) * 300_000) for i in range(6)]
    tar = tar_bytes(files)
    pieces = [tar[start : start + 500_000] for start in range(0, len(tar), 500_000)]
    layer = b"".join(gzip.compress(piece, mtime=0) for piece in pieces)
    assert len(pieces) > 3
    apply_layer(io.BytesIO(layer), root)
    for i in range(6):
        assert (root / f"data/f{i}").read_bytes() == bytes([i]) * 300_000


def test_garbage_is_a_build_error(world: tuple[Path, Path]) -> None:
    root, _ = world
    with pytest.raises(BuildFailed, match="cannot unpack"):
        apply_layer(io.BytesIO(b"\x1f\x8b not really gzip" * 100), root)


def test_unpack_layers_from_the_layout_in_order(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "oci")
    descriptors = []
    for members, compress in (
        ([M("etc/version", data=b"1"), M("etc/old", data=b"x")], True),
        ([M("etc/version", data=b"2"), M("etc/.wh.old")], False),
    ):
        data = tar_bytes(members, compress=compress)
        digest = layout.write_bytes(data)
        descriptors.append(Descriptor(OCI_LAYER_GZIP if compress else OCI_LAYER, digest, len(data)))
    root = tmp_path / "root"
    unpack_layers(layout, descriptors, root)
    assert (root / "etc/version").read_bytes() == b"2"
    assert not (root / "etc/old").exists()
    # A zstd layer is read by its bytes, as gzip is (skiff's own zstd layers are tested in
    # test_reproducible_zstd.py): a damaged one is a build error, never a traceback.
    damaged = layout.write_json("application/octet-stream", b"\x28\xb5\x2f\xfd broken")
    zstd = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", damaged.digest, damaged.size)
    with pytest.raises(BuildFailed, match="cannot unpack"):
        unpack_layers(layout, [zstd], tmp_path / "other")


@pytest.mark.parametrize("absolute", [True, False])
def test_a_directory_then_a_symlink_of_the_same_name_changes_nothing_outside(
    world: tuple[Path, Path], absolute: bool
) -> None:
    """The directory's mode and times are set at the end of the layer: by then a symlink has
    taken its place, and they must not go through it to what it names."""
    root, outside = world
    victim = outside / "victim"
    os.chmod(victim, 0o600)
    before = victim.stat()
    target = str(victim) if absolute else "../" * 10 + str(victim).lstrip("/")
    apply(
        root,
        [
            M("d/", "dir", mode=0o6777),
            M("d", "sym", link=target),
            M("e/", "dir", mode=0o777),
            M("e", "sym", link=str(outside)),
            M("e/", "dir", mode=0o700),  # a directory entry over a symlink replaces it
        ],
    )
    after = victim.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert untouched(outside)
    assert os.readlink(root / "d") == target
    assert (root / "e").is_dir() and not (root / "e").is_symlink()
    assert (root / "e").stat().st_mode & 0o777 == 0o700


def test_deep_and_read_only_trees_are_removed_without_following_links(
    world: tuple[Path, Path],
) -> None:
    root, outside = world
    apply(
        root,
        [
            M("t/a/b/c/f", data=b"1"),
            M("t/a/link", "sym", link=str(outside)),
            M("t/a/b/", "dir", mode=0o555),
            M("t/a/", "dir", mode=0o500),
        ],
    )
    apply(root, [M("t", data=b"now a file")])  # replaces the whole tree
    assert (root / "t").read_bytes() == b"now a file"
    assert untouched(outside)
    with pytest.raises(BuildFailed, match="directories deep"):
        apply(root, [M("/".join(["d"] * 600) + "/f", data=b"")])
