"""A directory with a million entries and a file larger than 4 GiB (sparse)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.browse import list_path
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource

ENTRIES = int(os.environ.get("FERRYMAN_TEST_DIR_ENTRIES", "1000000"))
MIDDLE = b"f%07d" % (ENTRIES // 2)


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A tmpfs directory when available (creating a million files on disk is slow)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="ferryman-big-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_directory_with_a_million_entries(repo: Repository, fast_tmp: Path) -> None:
    big = fast_tmp / "src" / "big"
    big.mkdir(parents=True)
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(ENTRIES):
            os.mknod(b"f%07d" % i, 0o100644, dir_fd=fd)
        wfd = os.open(MIDDLE, os.O_WRONLY, dir_fd=fd)
        os.write(wfd, b"the one with content\n")
        os.close(wfd)
    finally:
        os.close(fd)
    before = _rss_mb()
    result = run_backup(LocalSource(fast_tmp / "src"), repo, BackupOptions(share="big"))
    assert result.status == "success", result.warnings[:5]
    assert result.stats.files_scanned == ENTRIES
    # names only (~60 MB for a million) are held for the directory being listed
    assert _rss_mb() - before < 400
    assert result.restore_point is not None
    (big_node,) = [n for n in list_path(repo, result.restore_point) if n.name == b"big"]
    assert len(big_node.subtrees) >= ENTRIES // 4096  # spread over many bounded tree blobs
    out = fast_tmp / "out"
    restored = run_restore(
        repo, result.restore_point, out, RestoreOptions(paths=[b"big/" + MIDDLE], strip_paths=True)
    )
    assert restored.status == "success"
    assert (out / MIDDLE.decode()).read_bytes() == b"the one with content\n"


def test_sparse_file_larger_than_4_gib(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = (5 << 30) + 12345
    with open(src / "huge.img", "wb") as f:
        f.truncate(size)
        f.seek(1 << 20)
        f.write(b"start" * 1000)
        f.seek((4 << 30) + 7)
        f.write(os.urandom(3 << 20))  # data beyond the 32-bit offset limit
    result = run_backup(LocalSource(src), repo, BackupOptions(share="huge"))
    assert result.status == "success"
    assert result.stats.bytes_read < 16 << 20
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out)
    assert restored.status == "success", restored.errors
    st = os.stat(out / "huge.img")
    assert st.st_size == size
    assert st.st_blocks * 512 < 64 << 20  # holes kept
    with open(src / "huge.img", "rb") as a, open(out / "huge.img", "rb") as b:
        for off, n in [(0, 4096), (1 << 20, 5000), ((4 << 30) + 7, 3 << 20), (size - 100, 100)]:
            a.seek(off)
            b.seek(off)
            assert a.read(n) == b.read(n)
