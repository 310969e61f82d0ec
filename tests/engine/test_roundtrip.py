"""Backup and restore of an awkward tree: byte for byte, metadata field by field."""

from __future__ import annotations

import dataclasses
import mmap
import os
import random
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ferryman.engine import file_saver
from ferryman.engine.backup import run_backup
from ferryman.engine.browse import list_path
from ferryman.engine.file_saver import SEGMENT, FileSaver
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.progress import ProgressEvent
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, RepositoryWriter
from ferryman.sources.local import LocalSource

from .trees import build_awkward_tree, diff_trees


def test_awkward_tree_round_trip(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_awkward_tree(src)
    events: list[ProgressEvent] = []
    result = run_backup(
        LocalSource(src), repo, BackupOptions(share="s", progress_interval=0.05), events.append
    )
    assert result.status == "success", result.warnings
    assert result.restore_point is not None
    assert events and events[-1].phase == "done"
    assert events[-1].files_scanned == result.stats.files_scanned
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions())
    assert restored.status == "success", restored.errors
    assert diff_trees(src, out) == []
    # hardlinks restored as links, sparse file keeps its holes
    assert os.stat(out / "hard1").st_ino == os.stat(out / "sub" / "hard3").st_ino
    sparse = os.stat(out / "sparse.img")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 8 << 20
    assert os.readlink(os.path.join(bytes(out), b"weird-link")) == b"\xff-weird-target"


def test_sparse_content_not_stored_as_zeros(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holey", "wb") as f:
        f.truncate(256 << 20)
        f.seek(100 << 20)
        f.write(b"data" * 1000)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.stats.bytes_read <= 8192  # one filesystem block, not 256 MiB
    assert result.stats.bytes_new <= 8192


def test_incremental_reads_only_changed_files(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(50):
        (src / "d" / f"f{i}").write_bytes(os.urandom(1000 + i))
    (src / "large").write_bytes(os.urandom(12 << 20))
    first = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert first.stats.files_read == 51
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.stats.files_read == 0
    assert again.stats.files_unchanged == 51
    assert again.parent == first.restore_point
    with open(src / "d" / "f7", "ab") as f:
        f.write(b"more")
    (src / "d" / "new").write_bytes(b"new file")
    (src / "d" / "f3").unlink()
    third = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert third.stats.files_read == 2
    assert third.stats.bytes_new < 10_000
    assert third.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, third.restore_point, out)
    assert diff_trees(src, out) == []


def test_unchanged_directory_keeps_its_xattrs_when_a_file_inside_changes(
    repo: Repository, tmp_path: Path
) -> None:
    """A directory whose own stat is unchanged takes its xattrs from the previous
    record; when a file inside changed, that record is re-encoded with them."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"one")
    try:
        os.setxattr(src / "d", "user.tag", b"kept")
    except OSError as exc:
        pytest.skip(f"no user xattrs here: {exc}")
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    stat_before = os.stat(src / "d")
    (src / "d" / "f").write_bytes(b"two, longer")  # the directory's own stat is unchanged
    assert os.stat(src / "d").st_ctime_ns == stat_before.st_ctime_ns
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.stats.files_read == 1 and again.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, again.restore_point, out)
    assert os.getxattr(out / "d", "user.tag") == b"kept"
    assert diff_trees(src, out) == []


def test_backup_raises_the_gc_threshold_only_while_it_runs(
    repo: Repository, tmp_path: Path
) -> None:
    """The proxy's process (the server, when embedded) gets its own GC settings back."""
    import gc

    from ferryman.engine.gc_tuning import GC_YOUNG_THRESHOLD

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    run_backup(
        LocalSource(src),
        repo,
        BackupOptions(share="s"),
        progress=lambda _event: seen.append(gc.get_threshold()),
    )
    assert seen and all(t[0] >= GC_YOUNG_THRESHOLD for t in seen)
    assert gc.get_threshold() == before


def test_restore_raises_the_gc_threshold_only_while_it_runs(
    repo: Repository, tmp_path: Path
) -> None:
    """As a backup does: raised during the walk, the process's own settings back after."""
    import gc

    from ferryman.engine.gc_tuning import GC_YOUNG_THRESHOLD

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    restored = run_restore(
        repo,
        result.restore_point,
        tmp_path / "out",
        progress=lambda _event: seen.append(gc.get_threshold()),
    )
    assert restored.status == "success", restored.errors
    assert seen and all(t[0] >= GC_YOUNG_THRESHOLD for t in seen)
    assert gc.get_threshold() == before


def test_re_runs_close_every_directory_they_open(repo: Repository, tmp_path: Path) -> None:
    """Unchanged files lend their directory to the tree saver once per directory; a
    completed re-run and a cancelled one both leave no descriptor open."""
    import threading

    from ferryman.engine.options import BackupCancelled

    src = tmp_path / "src"
    for d in range(30):
        (src / f"d{d:02}" / "sub").mkdir(parents=True)
        for f in range(20):
            (src / f"d{d:02}" / f"f{f:02}").write_bytes(b"%d-%d" % (d, f))
        (src / f"d{d:02}" / "sub" / "x").write_bytes(b"x")
    first = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    open_fds = len(os.listdir("/proc/self/fd"))
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.stats.files_unchanged == first.stats.files_read == 30 * 21
    assert len(os.listdir("/proc/self/fd")) == open_fds
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BackupCancelled):
        run_backup(LocalSource(src), repo, BackupOptions(share="s"), cancel=cancel)
    assert len(os.listdir("/proc/self/fd")) == open_fds


def test_unchanged_hardlinks_are_reused_unread_and_restored_as_links(
    repo: Repository, tmp_path: Path
) -> None:
    """Files with several names go through the hard-link path on a re-run: still not
    read again, and still restored as one inode."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(os.urandom(20_000))
    os.link(src / "a", src / "sub" / "b")
    (src / "plain").write_bytes(b"plain")
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    # unchanged: "a" and "plain"; "sub/b" is recorded as a link to "a"
    assert again.stats.files_read == 0 and again.stats.files_unchanged == 2
    assert again.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, again.restore_point, out)
    assert os.stat(out / "a").st_ino == os.stat(out / "sub" / "b").st_ino
    assert diff_trees(src, out) == []


def test_other_share_does_not_serve_as_parent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    run_backup(LocalSource(src), repo, BackupOptions(share="one"))
    other = run_backup(LocalSource(src), repo, BackupOptions(share="two"))
    assert other.parent is None
    assert other.stats.files_read == 1
    assert other.stats.bytes_new == 0  # deduplicated across shares


def test_unchanged_file_whose_chunks_are_gone_is_read_again(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """has_blob false for a reused chunk (garbage-collected): the file is re-read."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep").write_bytes(b"k" * 5000)
    (src / "gone").write_bytes(b"g" * 5000)
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    gone_id = repo.blob_id(b"g" * 5000)
    real, real_many = RepositoryWriter.has_blob, RepositoryWriter.has_blobs

    def has_blob(self: RepositoryWriter, blob_id: bytes) -> bool:
        return False if blob_id == gone_id else real(self, blob_id)

    def has_blobs(self: RepositoryWriter, blob_ids: Iterable[bytes]) -> set[bytes]:
        return real_many(self, blob_ids) - {gone_id}

    monkeypatch.setattr(RepositoryWriter, "has_blob", has_blob)
    monkeypatch.setattr(RepositoryWriter, "has_blobs", has_blobs)
    # chunks of an existing parent can only be gone while a GC generation is pending,
    # and then the writer does not trust the parent's blobs (tested in test_gc.py)
    monkeypatch.setattr(RepositoryWriter, "trusts_points", lambda self, ids: False)
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.status == "success"
    assert again.stats.files_read == 1 and again.stats.files_unchanged == 1
    assert again.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, again.restore_point, out)
    assert diff_trees(src, out) == []


def test_trusted_rerun_asks_the_index_for_no_reused_chunk(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent the writer trusts (trusts_points): the unchanged files' chunks, plain
    and hard-linked, are referenced without a has_blob/has_blobs query for them."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "plain").write_bytes(b"p" * 5000)
    (src / "linked").write_bytes(b"l" * 5000)
    os.link(src / "linked", src / "d" / "link2")
    first = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert first.restore_point is not None
    reused = {repo.blob_id(b"p" * 5000), repo.blob_id(b"l" * 5000)}
    asked: set[bytes] = set()
    real, real_many = RepositoryWriter.has_blob, RepositoryWriter.has_blobs

    def has_blob(self: RepositoryWriter, blob_id: bytes) -> bool:
        asked.add(bytes(blob_id))
        return real(self, blob_id)

    def has_blobs(self: RepositoryWriter, blob_ids: Iterable[bytes]) -> set[bytes]:
        ids = list(blob_ids)
        asked.update(bytes(b) for b in ids)
        return real_many(self, ids)

    monkeypatch.setattr(RepositoryWriter, "has_blob", has_blob)
    monkeypatch.setattr(RepositoryWriter, "has_blobs", has_blobs)
    again = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert again.status == "success"
    assert again.stats.files_read == 0
    assert asked.isdisjoint(reused)
    # the check is live: without trust the same re-run asks about those chunks
    monkeypatch.setattr(RepositoryWriter, "trusts_points", lambda self, ids: False)
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert reused <= asked


def test_directory_metadata_settled_in_rounds(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directory times stay right when metadata is applied every few directories."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "DIRS_PER_SETTLE", 2)
    src = tmp_path / "src"
    for i in range(6):
        d = src / f"d{i}" / "inner"
        d.mkdir(parents=True)
        for j in range(5):
            (d / f"f{j}").write_bytes(os.urandom(100))
        os.utime(d, ns=(10**18 + i, 10**18 + i))
        os.utime(d.parent, ns=(10**18, 10**18 + 7 * i))
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, result.restore_point, out)
    assert diff_trees(src, out) == []


def test_round_trip_through_worker_processes(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Files written by the restore's worker processes: same tree, links, holes."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 2)  # several batches, both workers
    src = tmp_path / "src"
    build_awkward_tree(src)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions(processes=2))
    assert restored.status == "success", restored.errors
    assert diff_trees(src, out) == []
    assert os.stat(out / "hard1").st_ino == os.stat(out / "sub" / "hard3").st_ino
    sparse = os.stat(out / "sparse.img")
    assert sparse.st_size == 64 << 20 and sparse.st_blocks * 512 < 8 << 20
    assert restored.stats.bytes_restored > 9 << 20
    assert "worker process" not in caplog.text  # written there, not by the fallback


def test_worker_processes_that_cannot_start_leave_the_work_to_threads(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that fails to open the target: its batches are written in-process."""
    from ferryman.engine import restore_procs, restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    real_setup = restore_procs.worker_setup

    def broken(*args: object, **kwargs: object) -> restore_procs.WorkerSetup | None:
        setup = real_setup(*args, **kwargs)  # type: ignore[arg-type]
        assert setup is not None
        return dataclasses.replace(setup, root_fd=-1)  # /proc/PID/fd/-1 does not exist

    monkeypatch.setattr(restore_procs, "worker_setup", broken)
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(1000 + i))
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions(processes=2))
    assert restored.status == "success", restored.errors
    assert restored.stats.files_restored == 20
    assert diff_trees(src, out) == []
    assert "writing its files here" in caplog.text or "using threads" in caplog.text


def test_default_restore_writes_through_worker_processes_past_the_threshold(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restore_pools: list[int],
) -> None:
    """With default options on two cores, a restore past PROCESS_AFTER_FILES files hands
    its files to two worker processes: the awkward tree comes back the same."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 3)
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    src = tmp_path / "src"
    build_awkward_tree(src)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions())
    assert restored.status == "success", restored.errors
    assert restore_pools == [2]
    assert "worker process" not in caplog.text  # written there, not by the fallback
    assert diff_trees(src, out) == []
    assert os.stat(out / "hard1").st_ino == os.stat(out / "sub" / "hard3").st_ino


@pytest.mark.timeout(60)  # a batch keeping its slot hangs the walk
@pytest.mark.parametrize("per_process", [8, 1], ids=["slots-free", "walk-waits-for-a-slot"])
def test_a_worker_process_killed_mid_restore_loses_and_doubles_no_file(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    per_process: int,
) -> None:
    """A worker process that dies (here: exits at its third batch) breaks the pool:
    the batches it and the other worker had not answered are written in-process,
    each file once, and the restore reports success with every file counted once.
    With one batch per process in flight the walk is waiting for a slot when the
    pool breaks: the failed batches give their slots back, it does not hang."""
    from ferryman.engine import restore_procs, restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 2)
    monkeypatch.setattr(restore_walk, "BATCHES_PER_PROCESS", per_process)
    real_submit = restore_procs.submit
    submitted: list[int] = []

    def submit(pool: object, jobs: list[restore_procs.Job]) -> object:
        submitted.append(len(jobs))
        if len(submitted) == 3:
            return pool.submit(os._exit, 9)  # type: ignore[attr-defined]
        return real_submit(pool, jobs)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_procs, "submit", submit)
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(1000 + i))
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions(processes=2))
    assert len(submitted) >= 3  # the worker did die
    assert restored.status == "success", restored.errors
    assert restored.stats.files_restored == 20
    assert restored.stats.bytes_restored == sum(1000 + i for i in range(20))
    assert diff_trees(src, out) == []
    assert "writing its files here" in caplog.text


def test_a_large_file_is_cut_as_a_whole_across_read_segments(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file is read in ``SEGMENT`` pieces, the open-ended last chunk of each
    carried into the next (as a view of the previous piece's buffer): its chunks are
    those of cutting the whole file at once, and it restores byte for byte. The chunk
    jobs are held until the whole file was read: a chunk (a view of its segment's
    buffer) stored after later segments were read still holds its own bytes."""
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(7).randbytes(3 * SEGMENT + 12_345)
    (src / "big").write_bytes(data)
    read = threading.Event()
    buffers: list[int] = []
    real_buffer, real_read, real_store = (
        file_saver._segment_buffer,
        FileSaver._read_large,
        FileSaver._store_chunk,
    )

    def segment_buffer(size: int) -> mmap.mmap:
        buffers.append(size)
        return real_buffer(size)

    def read_large(self: FileSaver, *args: Any) -> tuple[int, list[tuple[int, int]]]:
        try:
            return real_read(self, *args)
        finally:
            read.set()

    def store_chunk(self: FileSaver, piece: bytes | memoryview) -> bytes:
        assert read.wait(60), "the file was not read to its end with its chunks held"
        return real_store(self, piece)

    monkeypatch.setattr(file_saver, "_segment_buffer", segment_buffer)
    monkeypatch.setattr(FileSaver, "_read_large", read_large)
    monkeypatch.setattr(FileSaver, "_store_chunk", store_chunk)
    # room for every chunk of the file in flight: the reader never waits for the jobs
    options = BackupOptions(share="s", max_inflight_bytes=2 * len(data))
    result = run_backup(LocalSource(src), repo, options)
    assert result.status == "success", result.warnings
    assert len(buffers) >= 4  # read in segments
    assert result.restore_point is not None
    [node] = [n for n in list_path(repo, result.restore_point) if n.name == b"big"]
    whole = [repo.blob_id(c.data) for c in repo.chunker().cut_buf(data)]
    assert len(whole) > 4  # boundaries inside segments, and chunks across them
    assert node.content == whole
    run_restore(repo, result.restore_point, tmp_path / "out")
    assert (tmp_path / "out" / "big").read_bytes() == data
