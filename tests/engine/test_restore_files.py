"""OpenPath: the directory fds a restore worker writes a batch's files through."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.restore_files import OpenPath


@pytest.fixture
def root(tmp_path: Path) -> Iterator[int]:
    for d in ("a/b", "a/c", "d/b"):
        (tmp_path / d).mkdir(parents=True)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _ino(fd: int) -> int:
    return os.fstat(fd).st_ino


def test_each_path_gives_its_own_directory_and_a_repeat_reuses_the_fd(
    root: int, tmp_path: Path
) -> None:
    opened = OpenPath(root)
    try:
        first = opened.open([b"a", b"b"])
        assert _ino(first) == (tmp_path / "a/b").stat().st_ino
        assert opened.open([b"a", b"b"]) == first  # the same directory: no new open
        assert _ino(opened.open([b"a", b"c"])) == (tmp_path / "a/c").stat().st_ino
        assert _ino(opened.open([b"d"])) == (tmp_path / "d").stat().st_ino
        assert opened.open([]) == root
        assert opened.open([]) == root
        assert _ino(opened.open([b"a", b"b"])) == (tmp_path / "a/b").stat().st_ino
        # the same last name under another parent is another directory
        assert _ino(opened.open([b"d", b"b"])) == (tmp_path / "d/b").stat().st_ino
        # a caller's list changed after a call (the walk extends its path) is not the last
        parts = [b"a"]
        assert _ino(opened.open(parts)) == (tmp_path / "a").stat().st_ino
        parts.append(b"c")
        assert _ino(opened.open(parts)) == (tmp_path / "a/c").stat().st_ino
    finally:
        opened.close()


def test_a_symlink_on_the_path_is_refused_not_followed(root: int, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    opened = OpenPath(root)
    try:
        opened.open([b"a"])
        for _ in range(2):  # refused again on a repeat: a failed open is never reused
            with pytest.raises(OSError) as caught:
                opened.open([b"link"])
            assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
        assert _ino(opened.open([b"a"])) == (tmp_path / "a").stat().st_ino
    finally:
        opened.close()
