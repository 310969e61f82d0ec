"""Tree blobs added to the writer in batches (one index query for several): every blob
the repository lacks is stored, none it has, and none is missing from a checkpoint."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from ferryman.engine import tree_saver
from ferryman.engine.backup import BackupFailed, run_backup
from ferryman.engine.file_saver import SEGMENT, FileOutcome, LargeRead, PendingContent
from ferryman.engine.nodes import Node, NodeMap, load_root, load_tree_maps, node_from_stat
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.engine.stats import StatsCollector
from ferryman.repository import Repository
from ferryman.repository.writer import RepositoryWriter
from ferryman.sources.local import LocalSource

from .trees import diff_trees

DIRS = 10


def _share(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(DIRS):
        d = src / f"d{i}"
        d.mkdir(parents=True)
        (d / "f").write_bytes(f"file {i}".encode() * 100)
    return src


def _backup(repo: Repository, src: Path, parent: BackupResult | None = None) -> BackupResult:
    result = run_backup(
        LocalSource(src),
        repo,
        BackupOptions(share="s", parent=parent.restore_point if parent else None),
    )
    assert result.status == "success"
    return result


def _restores_as(repo: Repository, result: BackupResult, src: Path, out: Path) -> None:
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, out)
    assert diff_trees(src, out) == []


def _dir_blobs(repo: Repository, result: BackupResult) -> dict[bytes, list[bytes]]:
    """The tree blob ids of each directory under the root, by name."""
    root: list[NodeMap] = []
    for blob_id in load_root(repo, result.root_tree).subtrees:
        root.extend(load_tree_maps(repo, blob_id))
    return {m["n"]: list(m["st"]) for m in root if m.get("t") == "dir"}


def _asked(monkeypatch: pytest.MonkeyPatch, gone: set[bytes]) -> list[list[bytes]]:
    """Records every ``has_blobs`` call's ids; the ids in ``gone`` are answered missing
    (as for blobs whose only packs a garbage collection condemned)."""
    calls: list[list[bytes]] = []
    real = RepositoryWriter.has_blobs

    def has_blobs(self: RepositoryWriter, blob_ids: Iterable[bytes]) -> set[bytes]:
        ids = list(blob_ids)
        calls.append(ids)
        return real(self, ids) - gone

    monkeypatch.setattr(RepositoryWriter, "has_blobs", has_blobs)
    return calls


def _record_single_lookups(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The ids the index cache is asked to locate one at a time (``IndexCache.locations``),
    recorded from now on into the returned list."""
    from ferryman.repository.index_cache import IndexCache

    single: list[bytes] = []
    real = IndexCache.locations

    def locations(self: IndexCache, blob_id: bytes) -> list[tuple[object, ...]]:
        single.append(bytes(blob_id))
        return real(self, blob_id)  # type: ignore[return-value]

    monkeypatch.setattr(IndexCache, "locations", locations)
    return single


def test_new_tree_blobs_are_stored_in_batches_and_known_ones_not_again(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each directory's mtime changed, half its files changed: the directories whose
    entries are unchanged build their previous blob again (found in the index, not
    stored nor counted), the others new blobs (stored); asked a few at a time."""
    monkeypatch.setattr(tree_saver, "BUILT_MAX", 3)
    src = _share(tmp_path)
    first = _backup(repo, src)
    assert first.stats.trees_written == DIRS + 1
    before = _dir_blobs(repo, first)
    for i in range(DIRS):
        if i % 2:
            (src / f"d{i}" / "f").write_bytes(b"changed")
        os.utime(src / f"d{i}", ns=(10**18, 10**18 + i))
    calls = _asked(monkeypatch, set())
    again = _backup(repo, src, first)
    # five changed directories and the root (its records of the directories changed)
    assert again.stats.trees_written == DIRS // 2 + 1
    after = _dir_blobs(repo, again)
    kept = [f"d{i}".encode() for i in range(0, DIRS, 2)]
    assert [n for n in after if after[n] == before[n]] == kept
    tree_calls = [c for c in calls if set(c) & {b for ids in after.values() for b in ids}]
    assert tree_calls and max(map(len, tree_calls)) == 3
    _restores_as(repo, again, src, tmp_path / "out")


def test_a_tree_blob_the_batched_lookup_finds_missing_is_stored_again(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory's previous blob built again whose only copy the index query does not
    count (a condemned pack): it is stored again (a second location), and the restore
    point reads it; without that answer the same run stores no directory's blob."""
    src = _share(tmp_path)
    first = _backup(repo, src)
    before = _dir_blobs(repo, first)
    gone = {before[b"d3"][0], before[b"d7"][0]}
    for i in range(DIRS):
        os.utime(src / f"d{i}", ns=(10**18, 10**18 + i))
    _asked(monkeypatch, gone)
    again = _backup(repo, src, first)
    assert again.stats.trees_written == 2 + 1  # d3, d7 and the root
    assert _dir_blobs(repo, again) == before
    repo.sync_index()
    for blob_id in gone:
        assert len(repo.index_cache.locations(blob_id)) == 2
    assert len(repo.index_cache.locations(before[b"d0"][0])) == 1
    _restores_as(repo, again, src, tmp_path / "out")
    monkeypatch.undo()
    for i in range(DIRS):
        os.utime(src / f"d{i}", ns=(10**18, 2 * 10**18 + i))
    third = _backup(repo, src, again)
    assert third.stats.trees_written == 1  # the root only


def test_a_checkpoint_names_only_tree_blobs_the_writer_has(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints taken on every event: every tree blob built before one is in the
    writer (added) when it is published, though fewer than a batch were built."""
    built: list[bytes] = []
    missing: list[bytes] = []
    real_store = tree_saver.TreeSaver._store
    checkpoints = 0

    def store(self: tree_saver.TreeSaver, buffer: list[NodeMap]) -> bytes:
        blob_id = real_store(self, buffer)
        built.append(blob_id)
        return blob_id

    from ferryman.engine import checkpoint

    real_call = checkpoint.CheckpointSaver.__call__

    def call(self: checkpoint.CheckpointSaver, root: Node) -> None:
        nonlocal checkpoints
        checkpoints += 1
        missing.extend(b for b in built if not self._writer.has_blob(b))
        real_call(self, root)

    monkeypatch.setattr(tree_saver.TreeSaver, "_store", store)
    monkeypatch.setattr(checkpoint.CheckpointSaver, "__call__", call)
    src = _share(tmp_path)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s", checkpoint_interval=0))
    assert checkpoints > DIRS and built
    assert missing == []
    _restores_as(repo, result, src, tmp_path / "out")


def test_previous_tree_blobs_copied_from_are_located_in_one_query_per_batch(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed in every directory: each directory's blob is stored again from its
    previous one's records, whose locations the tree saver asks for together (none is
    looked up alone); the same without trust (every run's blob is read to confirm)."""
    src = _share(tmp_path)
    for i in range(DIRS):
        for j in range(5):
            (src / f"d{i}" / f"g{j}").write_bytes(f"other {i} {j}".encode())
    previous = _backup(repo, src)
    single = _record_single_lookups(monkeypatch)
    for trusted in (True, False):
        monkeypatch.setattr(RepositoryWriter, "trusts_points", lambda self, ids, t=trusted: t)
        before = _dir_blobs(repo, previous)
        for i in range(DIRS):
            (src / f"d{i}" / "g2").write_bytes(f"changed {i} {trusted}".encode())
        single.clear()
        again = _backup(repo, src, previous)
        assert again.stats.trees_written == DIRS + 1
        assert again.stats.files_read == DIRS
        assert not {b for ids in before.values() for b in ids} & set(single)
        _restores_as(repo, again, src, tmp_path / f"out-{trusted}")
        previous = again


def test_a_failed_last_batch_fails_the_backup_and_publishes_nothing(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree blobs of a small share are all added in the one batch after the last
    event; when its index query fails, the backup fails with the error and no restore
    point (nor checkpoint) names the trees that were never stored."""
    asked: list[int] = []
    real = RepositoryWriter.has_blobs

    def has_blobs(self: RepositoryWriter, blob_ids: Iterable[bytes]) -> set[bytes]:
        ids = list(blob_ids)
        if threading.current_thread().name == "tree-saver":
            asked.append(len(ids))
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, ids)

    monkeypatch.setattr(RepositoryWriter, "has_blobs", has_blobs)
    src = _share(tmp_path)
    with pytest.raises(BackupFailed, match="disk I/O error"):
        run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert asked == [DIRS + 1]  # one batch, at the end: every directory's and the root's
    assert repo.list_restore_points(include_checkpoints=True) == []


def test_a_directory_stored_again_for_its_subdirectory_has_its_blob_located_ahead(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trusted: a file changed only in each ``d<i>/sub``; ``d<i>``, whose own entries are
    unchanged, is stored again because its subdirectory is, so its previous blob (its
    files' records are copied from it) is located with the batch's, not alone."""
    src = _share(tmp_path)
    for i in range(DIRS):
        for j in range(5):
            (src / f"d{i}" / f"g{j}").write_bytes(f"other {i} {j}".encode())
        (src / f"d{i}" / "sub").mkdir()
        (src / f"d{i}" / "sub" / "f").write_bytes(f"sub {i}".encode())
    previous = _backup(repo, src)
    before = _dir_blobs(repo, previous)
    for i in range(DIRS):
        (src / f"d{i}" / "sub" / "f").write_bytes(f"changed {i}".encode())
    single = _record_single_lookups(monkeypatch)
    monkeypatch.setattr(RepositoryWriter, "trusts_points", lambda self, ids: True)
    again = _backup(repo, src, previous)
    assert again.stats.trees_written == 2 * DIRS + 1  # each sub, each d<i>, the root
    after = _dir_blobs(repo, again)
    assert all(after[n] != before[n] for n in before)
    assert not {b for ids in before.values() for b in ids} & set(single)
    _restores_as(repo, again, src, tmp_path / "out")


def test_a_checkpoint_while_a_file_is_held_names_only_tree_blobs_the_writer_has(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint taken while a large file is held (of what came before it): the blobs
    of the directory completed before it and of the partial root are in the writer when
    it is published, though fewer than a batch were built."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x").write_bytes(b"x")
    with open(src / "b.img", "wb") as f:
        f.truncate(3 * SEGMENT)
    built: list[bytes] = []
    real_store = tree_saver.TreeSaver._store

    def store(self: tree_saver.TreeSaver, buffer: list[NodeMap]) -> bytes:
        blob_id = real_store(self, buffer)
        built.append(blob_id)
        return blob_id

    monkeypatch.setattr(tree_saver.TreeSaver, "_store", store)
    readable = threading.Event()  # set by the first checkpoint: the image is read then

    def outcome() -> FileOutcome:
        readable.wait(30)
        return FileOutcome(error="Input/output error")

    image = PendingContent(outcome, lambda timeout: readable.wait(timeout), LargeRead())
    held: list[bool] = []  # per checkpoint: whether the image was still being read
    missing: list[bytes] = []
    with repo.open_writer("test") as writer:

        def checkpoint(root: Node) -> None:
            held.append(not readable.is_set())
            missing.extend(b for b in built if not writer.has_blob(b))
            readable.set()

        trees = tree_saver.TreeSaver(
            repo, writer, StatsCollector(), on_checkpoint=checkpoint, checkpoint_interval=0.3
        )
        node = node_from_stat
        trees.put(
            [
                tree_saver.EnterDir(node(b"src", os.stat(src)), b""),
                tree_saver.EnterDir(node(b"a", os.stat(src / "a")), b"a"),
                tree_saver.Entry(node(b"x", os.stat(src / "a" / "x")), b"a/x"),
                tree_saver.LeaveDir(),
                tree_saver.Entry(node(b"b.img", os.stat(src / "b.img")), b"b.img", image),
                tree_saver.LeaveDir(),  # the root waits for the image: checkpoints go on
            ]
        )
        assert trees.finish() is not None
    assert held[:1] == [True]
    assert len(built) >= 3 and missing == []
