"""LocalSource and LocalRestoreTarget: dir-fd based, never following symlinks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ferryman.sources.base import SourceUnavailable, UnsafeName, check_name
from ferryman.sources.local import LocalRestoreTarget, LocalSource
from ferryman.sources.metadata import (
    data_extents,
    holes_from_extents,
    read_xattrs,
    split_acls,
)


def test_names_are_sorted_raw_bytes(tmp_path: Path) -> None:
    for name in [b"b", b"a", b"\xff\xfe", b"new\nline", b"A"]:
        (Path(os.fsdecode(bytes(tmp_path) + b"/" + name))).write_bytes(b"")
    root = LocalSource(tmp_path).open_root()
    try:
        assert root.names() == [b"A", b"a", b"b", b"new\nline", b"\xff\xfe"]
    finally:
        root.release()


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    os.symlink("real", tmp_path / "dirlink")
    os.symlink("f", tmp_path / "real" / "filelink")
    os.symlink("loop", tmp_path / "loop")
    root = LocalSource(tmp_path).open_root()
    try:
        with pytest.raises(OSError) as exc:
            root.open_dir(b"dirlink")
        assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)
        with pytest.raises(OSError) as exc2:
            root.open_file(b"loop")
        assert exc2.value.errno == errno.ELOOP
        assert root.read_link(b"loop") == b"loop"
        sub = root.open_dir(b"real")
        with pytest.raises(OSError):
            sub.open_file(b"filelink")
        sub.release()
    finally:
        root.release()


def test_fifo_open_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    root = LocalSource(tmp_path).open_root()
    try:
        f = root.open_file(b"fifo")  # O_NONBLOCK: returns at once even with no writer
        f.close()
    finally:
        root.release()


def test_xattrs_acls_and_fd_variant(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    os.setxattr(tmp_path / "f", "user.k", b"v\x00")
    os.symlink("f", tmp_path / "l")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attrs = read_xattrs(fd, b"f")
        assert attrs == {b"user.k": b"v\x00"}
        assert read_xattrs(fd, b"l") == {}  # the link itself, not its target
    finally:
        os.close(fd)
    root = LocalSource(tmp_path).open_root()
    try:
        f = root.open_file(b"f")
        assert f.read_xattrs() == {b"user.k": b"v\x00"}
        f.close()
    finally:
        root.release()
    rest, access, default = split_acls({b"system.posix_acl_access": b"A", b"user.x": b"1"})
    assert rest == {b"user.x": b"1"} and access == b"A" and default is None


def test_sparse_extents(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(16 << 20)
        f.seek(4 << 20)
        f.write(b"d" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, 16 << 20)
    finally:
        os.close(fd)
    assert extents == [(4 << 20, 4096)]
    assert holes_from_extents(extents, 16 << 20) == [
        (0, 4 << 20),
        ((4 << 20) + 4096, (12 << 20) - 4096),
    ]


def test_long_paths_through_dir_fds(tmp_path: Path) -> None:
    root = LocalSource(tmp_path).open_root()
    d = root
    try:
        for _ in range(30):  # 30 * 201 bytes > PATH_MAX
            os.mkdir(b"x" * 200, dir_fd=d.fd)
            nd = d.open_dir(b"x" * 200)
            if d is not root:
                d.release()
            d = nd
        assert d.names() == []
    finally:
        if d is not root:
            d.release()
        root.release()


def test_unavailable_root(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="cannot open source"):
        LocalSource(tmp_path / "missing").open_root()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SourceUnavailable):
        LocalSource(tmp_path / "file").open_root()


@pytest.mark.parametrize("bad", [b"", b".", b"..", b"a/b", b"/abs", b"nul\x00"])
def test_unsafe_names(bad: bytes) -> None:
    with pytest.raises(UnsafeName):
        check_name(bad)


def test_target_refuses_unsafe_names_and_symlinked_dirs(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = LocalRestoreTarget(tmp_path / "t")
    root = target.open_root()
    try:
        with pytest.raises(UnsafeName):
            root.create_file(b"../x", 0o644)
        os.symlink(outside, tmp_path / "t" / "d")
        with pytest.raises(OSError):
            root.make_dir(b"d", 0o755)
        os.symlink(outside / "f", tmp_path / "t" / "f")
        with pytest.raises(OSError):
            root.create_file(b"f", 0o644)
        assert list(outside.iterdir()) == []
        sub = root.make_dir(b"new", 0o755)
        os.close(sub.create_file(b"file", 0o600))
        sub.close()
        assert (tmp_path / "t" / "new" / "file").exists()
        root.remove(b"new")
        assert not (tmp_path / "t" / "new").exists()
    finally:
        root.close()
