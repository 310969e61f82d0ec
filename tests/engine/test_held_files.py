"""The tree saver takes the events after a large file while it is still being read.

Before, it took the scan's events strictly in order: an appended disk image early in
the walk stopped the walk once the queue of events behind it was full.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ferryman.engine import tree_saver
from ferryman.engine.backup import run_backup
from ferryman.engine.checkpoint import PARTIAL_SIZE
from ferryman.engine.file_saver import SEGMENT, FileOutcome, LargeRead, PendingContent
from ferryman.engine.nodes import (
    Node,
    NodeMap,
    load_root,
    load_tree_maps,
    node_from_map,
    node_from_stat,
)
from ferryman.engine.options import BackupCancelled, BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.engine.stats import StatsCollector
from ferryman.repository import Repository
from ferryman.sources import local
from ferryman.sources.local import LocalSource

from .trees import diff_trees

BIG = 3 * SEGMENT
AFTER = 9_000  # more entries than the scanner may queue ahead (16 batches of 512)


def _share(src: Path) -> None:
    (src / "a").mkdir(parents=True)
    (src / "a" / "1.img").write_bytes(os.urandom(BIG))
    (src / "a" / "2.img").write_bytes(os.urandom(BIG))
    (src / "a" / "small").write_bytes(b"x" * 100)
    (src / "b").mkdir()
    for i in range(AFTER):
        (src / "b" / f"f{i:05d}").touch()
    (src / "c").mkdir()
    (src / "c" / "last").write_bytes(b"the end")


def _walk_end(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when the walk reaches the share's last entry (``c/last``)."""
    walked = threading.Event()
    real_lstat = local.LocalDir.lstat

    def lstat(self: local.LocalDir, name: bytes) -> os.stat_result:
        if name == b"last":
            walked.set()
        return real_lstat(self, name)

    monkeypatch.setattr(local.LocalDir, "lstat", lstat)
    return walked


def test_the_walk_goes_on_while_a_large_file_is_read(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _share(src)
    walked = _walk_end(monkeypatch)
    real_read_at = local.LocalFile.read_at
    stalled = threading.Event()

    def read_at(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        # the images wait until the walk reached the share's end; before, the walk
        # waited for them: this gave up after 10 s and the backup went on in order
        if offset >= SEGMENT and not walked.wait(10):
            stalled.set()
        return real_read_at(self, buf, offset)

    monkeypatch.setattr(local.LocalFile, "read_at", read_at)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s", workers=2))
    assert not stalled.is_set(), "the walk waited for the large files"
    assert result.status == "success"
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []

    # an unchanged re-run reuses everything, the held files' records included
    monkeypatch.undo()
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.stats.files_read == 0 and again.stats.trees_written == 0


def test_a_held_file_that_cannot_be_read_is_left_out_and_the_rest_kept(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _share(src)
    walked = _walk_end(monkeypatch)
    real_read_at = local.LocalFile.read_at
    first = os.stat(src / "a" / "1.img").st_ino
    stalled = threading.Event()

    def read_at(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        if offset >= SEGMENT:
            if not walked.wait(30):
                stalled.set()
            if os.fstat(self.fd).st_ino == first:
                raise OSError(5, "Input/output error")
        return real_read_at(self, buf, offset)

    monkeypatch.setattr(local.LocalFile, "read_at", read_at)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s", workers=2))
    assert not stalled.is_set(), "the walk waited for the large files"
    assert walked.is_set()
    assert result.status == "warning"
    assert [w.path for w in result.warnings] == ["a/1.img"]
    assert result.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, result.restore_point, out)
    a = os.stat(src / "a")
    (src / "a" / "1.img").unlink()  # what the restore point should hold
    os.utime(src / "a", ns=(a.st_atime_ns, a.st_mtime_ns))
    assert diff_trees(src, out) == []


def _entries(repo: Repository, root: bytes) -> dict[str, NodeMap]:
    """Every record of a restore point's tree by path, in tree order."""
    found: dict[str, NodeMap] = {}
    stack: list[tuple[str, Node]] = [("", load_root(repo, root))]
    while stack:
        prefix, node = stack.pop()
        for blob_id in node.subtrees:
            for m in load_tree_maps(repo, blob_id):
                path = prefix + os.fsdecode(m["n"])
                found[path] = m
                if m["t"] == "dir":
                    stack.append((path + "/", node_from_map(m)))
    return found


def test_a_cancel_while_a_file_is_held_keeps_its_prefix_and_what_came_after(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint of a task cancelled while a held file is read holds the file's
    stored prefix and every file completed after it (each whole); the resumed task
    reads only the rest of the large file and the files the checkpoint did not hold."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "1.img").write_bytes(os.urandom(BIG))
    (src / "b").mkdir()
    for i in range(600):
        (src / "b" / f"f{i:05d}").write_bytes(b"%d " % i * (i + 1))
    (src / "c").mkdir()
    (src / "c" / "last").write_bytes(b"the end")
    image = os.stat(src / "a" / "1.img").st_ino
    cancel = threading.Event()
    held = threading.Event()
    real_hold = tree_saver.TreeSaver._hold
    real_lstat = local.LocalDir.lstat
    real_read_at = local.LocalFile.read_at

    def hold(self: tree_saver.TreeSaver, h: tree_saver._Held) -> None:
        real_hold(self, h)
        if h.ev is not None:
            held.set()

    def lstat(self: local.LocalDir, name: bytes) -> os.stat_result:
        if name == b"f00500":
            held.wait(10)  # the cancel comes once the image's place is held
            cancel.set()
        return real_lstat(self, name)

    def read_at(self: local.LocalFile, buf: bytearray | memoryview, offset: int) -> int:
        if offset >= SEGMENT and os.fstat(self.fd).st_ino == image:
            cancel.wait(30)  # the image is still being read when the task is cancelled
        return real_read_at(self, buf, offset)

    monkeypatch.setattr(tree_saver.TreeSaver, "_hold", hold)
    monkeypatch.setattr(local.LocalDir, "lstat", lstat)
    monkeypatch.setattr(local.LocalFile, "read_at", read_at)
    with pytest.raises(BackupCancelled, match="checkpoint"):
        run_backup(LocalSource(src), repo, BackupOptions(share="s", workers=2), cancel=cancel)
    monkeypatch.undo()

    (point,) = repo.list_restore_points(include_checkpoints=True)
    assert point.checkpoint
    kept = _entries(repo, point.root)
    partial = kept.pop("a/1.img")
    assert partial[PARTIAL_SIZE] == BIG and 0 < int(partial["s"]) < BIG
    held_after = [p for p in kept if p.startswith("b/")]
    assert len(held_after) >= 500, "the files completed after the held one were dropped"
    assert held_after == sorted(held_after)  # in name order, after the held file's place
    out = tmp_path / "checkpoint"
    run_restore(repo, point.id, out)
    for path in held_after:  # every file it records is whole
        assert (out / path).read_bytes() == (src / path).read_bytes()
    prefix = int(partial["s"])
    assert (out / "a" / "1.img").read_bytes() == (src / "a" / "1.img").read_bytes()[:prefix]

    resumed = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert resumed.stats.bytes_resumed == prefix
    assert resumed.stats.files_unchanged >= len(held_after)
    assert resumed.restore_point is not None
    run_restore(repo, resumed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_a_checkpoint_after_a_held_file_was_left_out_is_not_skipped(
    repo: Repository, tmp_path: Path
) -> None:
    """Periodic checkpoints while a file is held record only what came before it. When
    that file is then left out (unreadable), the next checkpoint records the files
    taken after it, even though none completed in between (it was skipped as one
    already saved: a resumed task read those files again)."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "a.img", "wb") as f:
        f.truncate(3 * SEGMENT)
    for name in ("b", "c", "d"):
        (src / name).touch()
    readable = threading.Event()

    def outcome() -> FileOutcome:
        readable.wait(30)
        return FileOutcome(error="Input/output error")

    image = PendingContent(outcome, lambda timeout: readable.wait(timeout), LargeRead())
    saved: list[Node] = []
    collector = StatsCollector()
    with repo.open_writer("test") as writer:
        trees = tree_saver.TreeSaver(
            repo, writer, collector, on_checkpoint=saved.append, checkpoint_interval=0
        )
        events: list[tree_saver.Event] = [
            tree_saver.EnterDir(node_from_stat(b"root", os.stat(src)), b""),
            tree_saver.Entry(node_from_stat(b"a.img", os.stat(src / "a.img")), b"a.img", image),
        ]
        for name in ("b", "c", "d"):  # empty: nothing to read
            events.append(
                tree_saver.Entry(node_from_stat(name.encode(), os.stat(src / name)), name.encode())
            )
        trees.put(events)
        deadline = time.monotonic() + 30
        while not saved and time.monotonic() < deadline:  # the image is held
            time.sleep(0.01)
        assert saved, "no checkpoint while the image was held"
        readable.set()
        trees.put([tree_saver.CheckpointNow(), tree_saver.LeaveDir()])
        root = trees.finish()
    assert root is not None
    names = [m["n"] for blob in saved[-1].subtrees for m in load_tree_maps(repo, blob)]
    assert names == [b"b", b"c", b"d"]
    assert [w.path for w in collector.warnings] == ["a.img"]
