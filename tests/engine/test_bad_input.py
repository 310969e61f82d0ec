"""Bad input never aborts a backup: every skipped or degraded path becomes a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.browse import list_path
from ferryman.engine.options import BackupOptions
from ferryman.repository import Repository
from ferryman.sources import local
from ferryman.sources.local import LocalSource

from .conftest import PASSPHRASE


def _reasons(result_warnings: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {w.path: w.reason for w in result_warnings}


@pytest.fixture
def world_path() -> Iterator[Path]:
    """A temporary directory reachable by an unprivileged user (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ferryman-eacces-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_permission_denied_as_unprivileged_user(world_path: Path) -> None:
    """Run the backup as uid 65534 in a child process: real EACCES from the kernel."""
    tmp_path = world_path
    src = tmp_path / "src"
    (src / "locked-dir").mkdir(parents=True)
    (src / "locked-dir" / "inside").write_bytes(b"secret")
    (src / "readable").write_bytes(b"ok")
    (src / "unreadable").write_bytes(b"secret")
    os.chmod(src / "unreadable", 0o000)
    os.chmod(src / "locked-dir", 0o000)
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 65534, 65534)
    script = textwrap.dedent(
        f"""
        import json, os, sys
        # import everything first: the interpreter's own files are not readable by nobody
        from ferryman.repository import Repository, open_backend
        from ferryman.engine.backup import run_backup
        from ferryman.engine.options import BackupOptions
        from ferryman.sources.local import LocalSource
        import encodings.idna, concurrent.futures.thread, sqlite3, queue
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        repo = Repository.init(open_backend({str(work / "repo")!r}), {PASSPHRASE!r},
                               scrypt_n=1 << 10, cache_dir={str(work / "cache")!r})
        r = run_backup(LocalSource({str(src)!r}), repo, BackupOptions(share="s"))
        print(json.dumps({{"status": r.status, "files_read": r.stats.files_read,
                          "warnings": {{w.path: w.reason for w in r.warnings}}}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "warning"
    assert out["files_read"] == 1, out
    assert "permission denied" in out["warnings"]["unreadable"]
    assert "permission denied" in out["warnings"]["locked-dir"]


def test_vanished_entries(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "stays").write_bytes(b"a")
    (src / "goes-before-open").write_bytes(b"b")
    real_names = local.LocalDir.names

    def names_with_ghost(self: local.LocalDir) -> list[bytes]:
        return sorted([*real_names(self), b"ghost"])

    real_open = local.LocalDir.open_file

    def open_after_unlink(self: local.LocalDir, name: bytes) -> local.LocalFile:
        if name == b"goes-before-open":
            os.unlink(name, dir_fd=self.fd)
        return real_open(self, name)

    monkeypatch.setattr(local.LocalDir, "names", names_with_ghost)
    monkeypatch.setattr(local.LocalDir, "open_file", open_after_unlink)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    reasons = _reasons(result.warnings)
    assert result.status == "warning"
    assert "vanished" in reasons["ghost"]
    assert "vanished" in reasons["goes-before-open"]
    assert result.restore_point is not None
    names = [n.name for n in list_path(repo, result.restore_point)]
    assert names == [b"stays"]


@pytest.mark.parametrize("size", [100, 20 << 20], ids=["small", "large"])
@pytest.mark.parametrize("times", [1, 2], ids=["once", "always"])
def test_changed_while_read(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, times: int
) -> None:
    """Changed during the first read: re-read silently; changed on both reads: warning."""
    src = tmp_path / "src"
    src.mkdir()
    target = src / "growing"
    target.write_bytes(b"a" * size)
    changes = {"left": times}
    real_open = local.LocalDir.open_file

    def open_and_grow(self: local.LocalDir, name: bytes) -> local.LocalFile:
        f = real_open(self, name)
        if name == b"growing" and changes["left"] > 0:
            changes["left"] -= 1
            st = os.fstat(f.fd)
            with open(target, "ab") as w:
                w.write(b"b" * 10)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        return f

    monkeypatch.setattr(local.LocalDir, "open_file", open_and_grow)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    reasons = _reasons(result.warnings)
    if times == 1:
        assert result.status == "success", reasons
    else:
        assert "changed while being read" in reasons["growing"]
    assert result.restore_point is not None
    (node,) = list(list_path(repo, result.restore_point))
    assert node.size == size + 10 * times
    assert b"".join(repo.get_blob(c) for c in node.content) == target.read_bytes()


def test_fifo_never_blocks(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    (src / "after").write_bytes(b"x")
    done: list[object] = []
    t = threading.Thread(
        target=lambda: done.append(run_backup(LocalSource(src), repo, BackupOptions(share="s"))),
        daemon=True,
    )
    t.start()
    t.join(30)
    assert done, "backup blocked on a FIFO"
    assert [n.type for n in list_path(repo, done[0].restore_point)] == ["file", "fifo"]  # type: ignore[attr-defined]


def test_file_replaced_by_fifo_after_scan(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file swapped for a FIFO between lstat and open: O_NONBLOCK, no hang."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "swap").write_bytes(b"regular")
    real_open = local.LocalDir.open_file

    def swap(self: local.LocalDir, name: bytes) -> local.LocalFile:
        os.unlink(name, dir_fd=self.fd)
        os.mkfifo(name, dir_fd=self.fd)
        return real_open(self, name)

    monkeypatch.setattr(local.LocalDir, "open_file", swap)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.status == "warning"
    assert "swap" in _reasons(result.warnings)


def test_missing_source_root_is_a_clear_error(repo: Repository, tmp_path: Path) -> None:
    from ferryman.engine.backup import BackupFailed

    with pytest.raises(BackupFailed, match="cannot open source"):
        run_backup(LocalSource(tmp_path / "nope"), repo, BackupOptions(share="s"))


def test_large_file_truncated_while_read(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shrinking under the reader: no crash (pread, never mmap), stored as read, warned."""
    src = tmp_path / "src"
    src.mkdir()
    target = src / "shrinking"
    target.write_bytes(os.urandom(40 << 20))
    real_read = local.LocalFile.read_at
    calls = {"n": 0}

    def read_and_truncate(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            os.truncate(target, 12 << 20)
        return real_read(self, buf, offset)

    monkeypatch.setattr(local.LocalFile, "read_at", read_and_truncate)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    (node,) = list(list_path(repo, result.restore_point))
    assert node.size == 12 << 20
    assert b"".join(repo.get_blob(c) for c in node.content) == target.read_bytes()


def test_writer_thread_appending_during_backup(repo: Repository, tmp_path: Path) -> None:
    """A real concurrent writer: the backup completes; the file is stored or warned about."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}").write_bytes(os.urandom(5000))
    log = src / "busy.log"
    log.write_bytes(b"start\n")
    stop = threading.Event()

    def append() -> None:
        with open(log, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x" * 4096)

    t = threading.Thread(target=append, daemon=True)
    t.start()
    try:
        result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    finally:
        stop.set()
        t.join()
    assert result.restore_point is not None
    assert result.stats.files_read >= 200
    names = {n.name for n in list_path(repo, result.restore_point)}
    assert b"busy.log" in names
    for w in result.warnings:
        assert w.path == "busy.log" and "changed while being read" in w.reason
