"""Interrupted backups resume without re-reading or re-sending what was stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.checkpoint import PARTIAL_SIZE
from ferryman.engine.file_saver import SEGMENT
from ferryman.engine.nodes import load_root, load_tree_maps, node_from_map
from ferryman.engine.options import BackupCancelled, BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, RepositoryError, open_backend
from ferryman.sources import local
from ferryman.sources.local import LocalSource

from .conftest import PASSPHRASE
from .trees import diff_trees


def _tree(src: Path, dirs: int = 8, files: int = 100) -> None:
    for d in range(dirs):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(2000))


def test_cancel_then_resume(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree(src)
    cancel = threading.Event()
    seen = {"n": 0}
    real_lstat = local.LocalDir.lstat

    def counting_lstat(self: local.LocalDir, name: bytes) -> os.stat_result:
        seen["n"] += 1
        if seen["n"] == 500:
            cancel.set()
        return real_lstat(self, name)

    monkeypatch.setattr(local.LocalDir, "lstat", counting_lstat)
    with pytest.raises(BackupCancelled, match="checkpoint"):
        run_backup(LocalSource(src), repo, BackupOptions(share="s"), cancel=cancel)
    points = repo.list_restore_points(include_checkpoints=True)
    assert [p.checkpoint for p in points] == [True]
    resumed = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert resumed.status == "success"
    # most of what the first run stored is neither read nor sent again
    assert resumed.stats.files_unchanged >= 300
    assert resumed.stats.files_read <= 800 - 300
    assert resumed.stats.bytes_deduplicated <= 300 * 2000
    # the checkpoint is gone, the final point is complete
    points = repo.list_restore_points(include_checkpoints=True)
    assert [p.checkpoint for p in points] == [False]
    assert resumed.restore_point is not None
    run_restore(repo, resumed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_killed_process_resumes_from_periodic_checkpoint(tmp_path: Path) -> None:
    """kill -9 a backup in a child process after its first checkpoint; re-run in this one."""
    src = tmp_path / "src"
    _tree(src, dirs=6, files=100)
    repo_dir, cache = tmp_path / "repo", tmp_path / "cache"
    Repository.init(open_backend(str(repo_dir)), PASSPHRASE, scrypt_n=1 << 10).close()
    script = textwrap.dedent(
        f"""
        import time
        from ferryman.repository import Repository, open_backend
        from ferryman.engine.backup import run_backup
        from ferryman.engine.options import BackupOptions
        from ferryman.sources import local
        real_open = local.LocalDir.open_file
        def slow_open(self, name):
            time.sleep(0.01)  # a slow share: the walk takes seconds
            return real_open(self, name)
        local.LocalDir.open_file = slow_open
        repo = Repository.open(open_backend({str(repo_dir)!r}), {PASSPHRASE!r},
                               cache_dir={str(tmp_path / "child-cache")!r})
        run_backup(local.LocalSource({str(src)!r}), repo,
                   BackupOptions(share="s", checkpoint_interval=0.3))
        print("finished")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    points_dir = repo_dir / "points"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if points_dir.exists() and any(points_dir.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait()
    repo = Repository.open(open_backend(str(repo_dir)), PASSPHRASE, cache_dir=cache)
    try:
        checkpoints = [p for p in repo.list_restore_points(include_checkpoints=True)]
        assert checkpoints and all(p.checkpoint for p in checkpoints)
        resumed = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
        assert resumed.stats.files_unchanged > 0
        assert resumed.stats.files_read < 600
        assert resumed.restore_point is not None
        run_restore(repo, resumed.restore_point, tmp_path / "out")
        assert diff_trees(src, tmp_path / "out") == []
    finally:
        repo.close()


BIG = 48 << 20  # a few SEGMENTs: the cancel lands well inside the file


def _tree_with_big_file(src: Path) -> Path:
    _tree(src, dirs=2, files=20)
    big = src / "d1" / "vm.img"
    big.write_bytes(os.urandom(BIG))
    return big


def _cancel_after(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> tuple[threading.Event, dict[str, int]]:
    """Cancel the backup once ``limit`` bytes were read through pread (large files)."""
    cancel = threading.Event()
    seen = {"read": 0}
    real_read_at = local.LocalFile.read_at

    def counting_read_at(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        n = real_read_at(self, buf, offset)
        seen["read"] += n
        if seen["read"] >= limit:
            cancel.set()
        return n

    monkeypatch.setattr(local.LocalFile, "read_at", counting_read_at)
    return cancel, seen


def _partial_nodes(repo: Repository) -> list[dict[str, object]]:
    """Partial-file records of the (single) checkpoint's tree, as stored maps."""
    (point,) = repo.list_restore_points(include_checkpoints=True)
    assert point.checkpoint
    return _partials_of(repo, point.root)


def _newest_checkpoint_partials(repo: Repository) -> list[dict[str, object]]:
    """Partial-file records of the newest checkpoint (none yet: empty)."""
    try:
        points = repo.list_restore_points(include_checkpoints=True)
    except RepositoryError:  # a checkpoint deleted while listed: try again later
        return []
    checkpoints = [p for p in points if p.checkpoint]
    return _partials_of(repo, checkpoints[-1].root) if checkpoints else []


def _partials_of(repo: Repository, root: bytes) -> list[dict[str, object]]:
    found = []
    stack = [load_root(repo, root)]
    while stack:
        for blob_id in stack.pop().subtrees:
            for m in load_tree_maps(repo, blob_id):
                if m["t"] == "dir":
                    stack.append(node_from_map(m))
                elif PARTIAL_SIZE in m:
                    found.append(m)
    return found


def test_cancel_mid_large_file_keeps_its_prefix_and_resume_reads_only_the_rest(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _tree_with_big_file(src)
    cancel, seen = _cancel_after(monkeypatch, 20 << 20)
    with pytest.raises(BackupCancelled, match="checkpoint"):
        run_backup(LocalSource(src), repo, BackupOptions(share="s", workers=2), cancel=cancel)
    # the reader stopped at the next segment instead of finishing the 48 MiB file
    assert seen["read"] <= (20 << 20) + 2 * SEGMENT
    (partial,) = _partial_nodes(repo)
    assert partial["n"] == b"vm.img" and partial[PARTIAL_SIZE] == BIG
    prefix = partial["s"]
    assert isinstance(prefix, int) and (8 << 20) < prefix < BIG

    monkeypatch.undo()
    resumed = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    # the stored prefix is neither read nor sent again; the rest of the file is
    print(
        f"cancelled after {seen['read']} bytes read; prefix {prefix}; resumed read "
        f"{resumed.stats.bytes_read}, new {resumed.stats.bytes_new}"
    )
    assert resumed.stats.bytes_read == BIG - prefix
    assert resumed.stats.bytes_resumed == prefix
    assert resumed.stats.bytes_new <= BIG - prefix + (1 << 20)
    assert resumed.stats.bytes_deduplicated < 4 << 20  # at most the tail chunk of the prefix
    assert [p.checkpoint for p in repo.list_restore_points(include_checkpoints=True)] == [False]
    assert resumed.restore_point is not None
    run_restore(repo, resumed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_a_large_file_changed_since_its_partial_checkpoint_is_read_again(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    big = _tree_with_big_file(src)
    cancel, _ = _cancel_after(monkeypatch, 20 << 20)
    with pytest.raises(BackupCancelled):
        run_backup(LocalSource(src), repo, BackupOptions(share="s", workers=2), cancel=cancel)
    assert _partial_nodes(repo)
    monkeypatch.undo()
    # same size and mtime, different bytes inside the stored prefix (ctime moves)
    before = big.stat()
    with big.open("r+b") as f:
        f.write(b"changed!" * 1024)
    os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
    resumed = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert resumed.stats.bytes_read >= BIG
    assert resumed.restore_point is not None
    run_restore(repo, resumed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_periodic_checkpoints_go_on_inside_a_large_file(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a large file is read, checkpoints keep being saved with its stored prefix."""
    src = tmp_path / "src"
    _tree_with_big_file(src)
    gate = threading.Event()
    real_read_at = local.LocalFile.read_at

    def held_read_at(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        if offset >= 24 << 20:  # hold the reader mid-file until a checkpoint shows the prefix
            gate.wait(60)
        return real_read_at(self, buf, offset)

    monkeypatch.setattr(local.LocalFile, "read_at", held_read_at)
    outcome: dict[str, BackupResult] = {}
    options = BackupOptions(share="s", checkpoint_interval=0.2)
    backup = threading.Thread(
        target=lambda: outcome.update(r=run_backup(LocalSource(src), repo, options))
    )
    backup.start()
    try:
        deadline = time.monotonic() + 60
        prefix = 0
        while prefix < 16 << 20 and time.monotonic() < deadline:
            time.sleep(0.1)
            partial = [
                int(m["s"])  # type: ignore[call-overload]
                for m in _newest_checkpoint_partials(repo)
                if m["n"] == b"vm.img"
            ]
            prefix = max(partial, default=0)
        assert prefix >= 16 << 20, "no checkpoint recorded the stored prefix of the file"
    finally:
        gate.set()
        backup.join(60)
    assert outcome["r"].status == "success"
    assert outcome["r"].stats.bytes_read >= BIG  # nothing was resumed: the task never stopped
    # a task keeps only its newest checkpoint, and none once it completed
    assert [p.checkpoint for p in repo.list_restore_points(include_checkpoints=True)] == [False]
