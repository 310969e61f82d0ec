"""Restore: overwrite policies, selected paths, per-file errors."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import ChunkerParams, Repository, open_backend
from ferryman.sources.local import LocalSource


@pytest.fixture
def point(repo: Repository, tmp_path: Path) -> str:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"backup a")
    (src / "dir" / "b.txt").write_bytes(b"backup b")
    (src / "dir" / "sub" / "c.txt").write_bytes(b"backup c")
    os.utime(src / "a.txt", ns=(10**18, 10**18))  # year 2001
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    return result.restore_point


def _target(tmp_path: Path, mtime_ns: int) -> Path:
    t = tmp_path / "target"
    t.mkdir()
    (t / "a.txt").write_bytes(b"local a")
    os.utime(t / "a.txt", ns=(mtime_ns, mtime_ns))
    return t


@pytest.mark.parametrize(
    ("policy", "local_mtime", "expect_a", "extra"),
    [
        ("replace", 2 * 10**18, b"backup a", None),
        ("skip", 1, b"local a", None),
        ("keep-both", 1, b"local a", "a.txt.restored"),
        ("if-newer", 2 * 10**18, b"local a", None),  # local is newer: keep it
        ("if-newer", 1, b"backup a", None),  # backup is newer: restore
    ],
)
@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_overwrite_policies(
    repo: Repository,
    tmp_path: Path,
    point: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    processes: int,
    policy: str,
    local_mtime: int,
    expect_a: bytes,
    extra: str | None,
) -> None:
    """The same outcome whether the files are written by threads or worker processes."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    target = _target(tmp_path, local_mtime)
    options = RestoreOptions(overwrite=policy, processes=processes)  # type: ignore[arg-type]
    result = run_restore(repo, point, target, options)
    assert result.status == "success", result.errors
    assert "worker process" not in caplog.text  # written there, not by the fallback
    assert (target / "a.txt").read_bytes() == expect_a
    if extra:
        assert (target / extra).read_bytes() == b"backup a"
    assert (target / "dir" / "sub" / "c.txt").read_bytes() == b"backup c"


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_keep_both_never_gives_a_name_the_restore_point_itself_uses(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """The point holds ``a`` and ``a.restored``, the target has ``a``: the point's ``a``
    must not take ``a.restored`` and then be overwritten by the point's own
    ``a.restored`` (which lost it before); every version is kept under its own name."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"backup a")
    (src / "a.restored").write_bytes(b"backup a.restored, longer")
    (src / "a.restored-2").write_bytes(b"backup a.restored-2")
    done = run_backup(LocalSource(src), repo, BackupOptions(share="kb"))
    assert done.restore_point is not None
    target = tmp_path / "target"
    target.mkdir()
    (target / "a").write_bytes(b"local a")
    options = RestoreOptions(overwrite="keep-both", processes=processes)
    result = run_restore(repo, done.restore_point, target, options)
    assert result.status == "success", result.errors
    contents = {p.name: p.read_bytes() for p in target.iterdir()}
    assert contents["a"] == b"local a"
    assert sorted(contents.values()) == sorted(
        [b"local a", b"backup a", b"backup a.restored, longer", b"backup a.restored-2"]
    )
    assert contents["a.restored"] == b"backup a"  # the first free name, as before


def test_selected_paths_keep_or_strip_their_parents(
    repo: Repository, tmp_path: Path, point: str
) -> None:
    full = tmp_path / "full"
    run_restore(repo, point, full, RestoreOptions(paths=[b"dir/sub"]))
    assert sorted(str(p.relative_to(full)) for p in full.rglob("*")) == [
        "dir",
        "dir/sub",
        "dir/sub/c.txt",
    ]
    stripped = tmp_path / "stripped"
    run_restore(repo, point, stripped, RestoreOptions(paths=[b"dir/b.txt"], strip_paths=True))
    assert [p.name for p in stripped.iterdir()] == ["b.txt"]
    result = run_restore(repo, point, tmp_path / "x", RestoreOptions(paths=[b"nope"]))
    assert result.status == "warning" and "does not exist" in result.errors[0].reason


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_reported_per_file(repo: Repository, tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src2"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(1 << 20))
    (src / "small").write_bytes(b"fits")
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s2"))
    assert result.restore_point is not None
    restored = run_restore(repo, result.restore_point, tiny_fs)
    assert restored.status == "warning"
    assert {e.path: e.reason for e in restored.errors}["big"] == "disk full"
    assert (tiny_fs / "small").read_bytes() == b"fits"


def test_restore_progress_and_cancel(repo: Repository, tmp_path: Path, point: str) -> None:
    import threading

    from ferryman.engine.progress import ProgressEvent

    events: list[ProgressEvent] = []
    result = run_restore(
        repo, point, tmp_path / "p", RestoreOptions(progress_interval=0.01), events.append
    )
    assert result.status == "success"
    assert events[-1].phase == "done" and events[-1].files_read == 3
    cancel = threading.Event()
    cancel.set()
    stopped = run_restore(repo, point, tmp_path / "c", RestoreOptions(), cancel=cancel)
    assert stopped.stats.files_restored == 0


def test_writer_processes_by_default_one_per_core_up_to_four(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cores, expected in ((1, 0), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert RestoreOptions().writer_processes() == expected
    assert RestoreOptions(processes=0).writer_processes() == 0  # threads only, as asked
    assert RestoreOptions(processes=7).writer_processes() == 7


@pytest.mark.parametrize("in_processes", [False, True])
def test_modes_are_exact_under_a_restrictive_umask(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    in_processes: bool,
    restore_pools: list[int],
) -> None:
    """A file's mode is set whatever the umask or the mode it was created with (the
    restore skips setting a mode the new file already has)."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    src = tmp_path / "src"
    src.mkdir()
    modes = {"rw-all": 0o666, "read-only": 0o444, "plain": 0o644, "exec": 0o755}
    modes |= {"private": 0o600, "setgid": 0o2755, "sticky": 0o1644}
    for name, mode in modes.items():
        (src / name).write_bytes(name.encode())
        os.chmod(src / name, mode)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    old = os.umask(0o077)
    try:
        options = RestoreOptions(processes=2 if in_processes else 0)
        restored = run_restore(repo, result.restore_point, tmp_path / "out", options)
    finally:
        os.umask(old)
    assert restored.status == "success", restored.errors
    assert restore_pools == ([2] if in_processes else [])
    assert "worker process" not in caplog.text  # written there, not by the fallback
    for name, mode in modes.items():
        st = os.stat(tmp_path / "out" / name)
        assert (name, st.st_mode & 0o7777) == (name, mode)
        assert (tmp_path / "out" / name).read_bytes() == name.encode()


def test_the_walk_keeps_only_a_few_batches_ahead_of_the_writer_processes(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restore_pools: list[int],
) -> None:
    """The walk waits for the worker processes instead of queueing the whole share (its
    memory held every queued file's node and path), and every file is still written."""
    from concurrent.futures import Future

    from ferryman.engine import restore_procs, restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 2)
    monkeypatch.setattr(restore_walk, "BATCHES_PER_PROCESS", 2)
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(40):
            (src / f"d{d}" / f"f{i:02}").write_bytes(f"{d}/{i} ".encode() * (i + 1))
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None

    lock = threading.Lock()
    in_flight = [0, 0]  # now, most ever
    real_submit = restore_procs.submit

    def submit(pool: object, jobs: list[restore_procs.Job]) -> Future[object]:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        fut: Future[object] = real_submit(pool, jobs)  # type: ignore[arg-type,assignment]

        def done(_: Future[object]) -> None:
            with lock:
                in_flight[0] -= 1

        fut.add_done_callback(done)
        return fut

    monkeypatch.setattr(restore_procs, "submit", submit)
    restored = run_restore(
        repo, result.restore_point, tmp_path / "out", RestoreOptions(processes=1)
    )
    assert restored.status == "success", restored.errors
    assert restore_pools == [1]
    assert "worker process" not in caplog.text  # written there, not by the fallback
    assert 1 <= in_flight[1] <= 2  # one process, two batches each
    assert restored.stats.files_restored == 120
    for d in range(3):
        for i in range(40):
            name = tmp_path / "out" / f"d{d}" / f"f{i:02}"
            assert name.read_bytes() == f"{d}/{i} ".encode() * (i + 1)


def test_a_batch_that_failed_long_before_the_end_still_fails_the_restore(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's error that is not one file's (the target lost for good) fails the
    restore even when hundreds of batches were queued after it: finished batches are
    forgotten along the way, a failed one is kept until its error is raised."""
    from ferryman.engine import restore_walk
    from ferryman.engine.restore import RestoreFailed
    from ferryman.engine.restore_files import write_local_file as real_write
    from ferryman.sources.base import SourceLost

    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"f{i:03}").write_bytes(b"%d" % i)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None

    monkeypatch.setattr(restore_walk, "BATCH_FILES", 1)  # 300 batches: more than kept (256)
    written: list[bytes] = []

    def write(
        repo: Repository, dir_fd: int, name: bytes, *args: object, **kwargs: object
    ) -> tuple[int, list[str]]:
        if name == b"f000":
            raise SourceLost("the target went away")
        written.append(name)
        return real_write(repo, dir_fd, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_walk, "write_local_file", write)
    with pytest.raises(RestoreFailed, match="the target went away"):
        run_restore(repo, result.restore_point, tmp_path / "out", RestoreOptions(processes=0))
    assert len(written) == 299  # the walk went on: the failed batch was long finished


def _chunked_repository(path: Path, chunker: ChunkerParams) -> Repository:
    """A repository with these chunker parameters (a large file's window is FETCH_WINDOW
    chunks of at most ``chunker.max_size``)."""
    return Repository.init(
        open_backend(str(path / "repo")),
        "pw",
        chunker=chunker,
        scrypt_n=1 << 10,
        cache_dir=path / "cache",
    )


def _backup_files(repo: Repository, src: Path, files: dict[str, bytes]) -> str:
    """``files`` written in ``src`` and backed up: the restore point."""
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    return result.restore_point


def test_a_batch_is_charged_the_window_of_the_repositorys_largest_chunks(
    repo: Repository, tmp_path: Path
) -> None:
    """A streamed file holds FETCH_WINDOW chunks at a time: with chunks up to 16 MiB that
    outweighs the default charge, and the budget counts it."""
    from ferryman.engine.restore_files import FETCH_WINDOW
    from ferryman.engine.restore_walk import BATCH_CHARGE, Restorer
    from ferryman.sources.local import LocalRestoreTarget

    (tmp_path / "t").mkdir()
    default = Restorer(repo, LocalRestoreTarget(tmp_path / "t").open_root(), RestoreOptions())
    assert default.batch_charge == BATCH_CHARGE  # 4 MiB chunks: 4 of them fit in it
    chunker = ChunkerParams(avg_size=4 << 20, min_size=1 << 20, max_size=16 << 20)
    big = _chunked_repository(tmp_path / "big", chunker)
    try:
        target = LocalRestoreTarget(tmp_path / "t").open_root()
        assert Restorer(big, target, RestoreOptions()).batch_charge == FETCH_WINDOW * (16 << 20)
    finally:
        big.close()


def test_a_large_file_being_written_does_not_hold_up_the_files_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file larger than the byte budget streams a few chunks at a time: while it is
    being written the walk goes on and the other writers write the files after it
    (charging its whole size took the entire budget and left them idle)."""
    from ferryman.engine import restore_walk
    from ferryman.engine.restore_files import write_local_file as real_write

    chunker = ChunkerParams(avg_size=64 << 10, min_size=16 << 10, max_size=128 << 10)
    repo = _chunked_repository(tmp_path / "r", chunker)  # its 512 KiB window fits the charge
    big = os.urandom(3 << 20)
    small = {f"b-small-{i}": b"small %d" % i for i in range(8)}
    point = _backup_files(repo, tmp_path / "src", {"a-big": big, **small})

    # scaled down: a budget smaller than the big file, a batch's charge smaller still
    monkeypatch.setattr(restore_walk, "QUEUED_BYTES", 2 << 20)
    monkeypatch.setattr(restore_walk, "BATCH_CHARGE", 512 << 10)
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 1)
    small_written = threading.Event()
    seen_while_big: list[bool] = []

    def write(
        repo: Repository, dir_fd: int, name: bytes, *args: object, **kwargs: object
    ) -> tuple[int, list[str]]:
        if name == b"a-big":
            seen_while_big.append(small_written.wait(10))
        done = real_write(repo, dir_fd, name, *args, **kwargs)  # type: ignore[arg-type]
        if name != b"a-big":
            small_written.set()
        return done

    monkeypatch.setattr(restore_walk, "write_local_file", write)
    options = RestoreOptions(processes=0, workers=2)
    try:
        restored = run_restore(repo, point, tmp_path / "out", options)
    finally:
        repo.close()
    assert restored.status == "success", restored.errors
    assert seen_while_big == [True]  # a small file was written while the big one waited
    assert (tmp_path / "out" / "a-big").read_bytes() == big
    for name, data in small.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_a_small_file_from_chunks_in_hand_gets_its_content_size_and_metadata(
    repo: Repository, tmp_path: Path
) -> None:
    """The small-file path (chunks fetched with the batch, written in order): repeated
    chunks, a stored size beyond the data (zero-filled, as the general path does), the
    mode and the timestamps; a file already there with more bytes fails the size check."""
    from ferryman.engine.nodes import Node
    from ferryman.engine.restore_files import VerifyFailed, write_local_file

    chunks = {b"1" * 32: b"hello ", b"2" * 32: b"world"}
    node = Node(
        name=b"f",
        type="file",
        mode=0o100640,
        size=22,
        content=[b"1" * 32, b"2" * 32, b"1" * 32],
        mtime_ns=10**18,
        atime_ns=10**18 + 5,
    )
    out = tmp_path / "out"
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        written, problems = write_local_file(
            repo, dir_fd, b"f", node, owner=False, xattrs=True, verify=True, prefetched=chunks
        )
        assert (written, problems) == (17, [])
        st = os.stat(out / "f")  # before reading it (a read may move the access time)
        assert (st.st_mode & 0o7777, st.st_mtime_ns, st.st_atime_ns) == (0o640, 10**18, 10**18 + 5)
        assert (out / "f").read_bytes() == b"hello worldhello " + bytes(5)

        (out / "g").write_bytes(b"x" * 100)  # longer than what is restored over it
        node.size, node.name = 17, b"g"
        with pytest.raises(VerifyFailed):
            write_local_file(
                repo, dir_fd, b"g", node, owner=False, xattrs=True, verify=True, prefetched=chunks
            )
    finally:
        os.close(dir_fd)


def test_worker_processes_start_early_for_large_files_and_not_for_a_small_restore(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restore_pools: list[int],
) -> None:
    """Past PROCESS_AFTER_BYTES queued bytes the worker processes start even before
    PROCESS_AFTER_FILES files (large files then do not share the walk's GIL); a restore
    of a few small files stays on threads."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_BYTES", 256 << 10)  # scaled down
    monkeypatch.setattr(restore_walk, "BATCH_FILES", 1)
    big = os.urandom(1 << 20)
    small = {f"small-{i}": b"small %d" % i for i in range(4)}
    point = _backup_files(repo, tmp_path / "src", {"big": big, **small})

    few = run_restore(
        repo, point, tmp_path / "few", RestoreOptions(processes=2, paths=[b"small-1"])
    )
    assert few.status == "success", few.errors
    assert restore_pools == []  # a small restore: threads only
    restored = run_restore(repo, point, tmp_path / "out", RestoreOptions(processes=2))
    assert restored.status == "success", restored.errors
    assert restore_pools == [2]
    assert "worker process" not in caplog.text  # written there, not by the fallback
    assert (tmp_path / "out" / "big").read_bytes() == big
    for name, data in small.items():
        assert (tmp_path / "out" / name).read_bytes() == data


@pytest.mark.parametrize("in_processes", [False, True], ids=["threads", "processes"])
def test_a_small_sparse_file_fetched_with_its_batch_keeps_its_data_at_its_offsets(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pools: list[int],
    in_processes: bool,
) -> None:
    """A file small enough to have its chunks fetched with its batch but with holes does
    not take the in-order path (that would put its data at offset 0): its data lands at
    its offsets, the holes stay holes, on the walk's threads and in a worker process."""
    from ferryman.engine import restore_walk

    assert restore_walk.BATCH_BYTES >= 6 << 20  # fetched with its batch
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holey", "wb") as f:
        f.truncate(6 << 20)  # above the backup's small-file limit: holes are looked for
        f.seek(3 << 20)
        f.write(b"data" * 1000)
    (src / "plain").write_bytes(b"plain")
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.restore_point is not None
    assert result.stats.bytes_read <= 8192  # the holes were recorded, not stored as zeros

    if in_processes:
        monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)  # scaled down
    options = RestoreOptions(processes=1 if in_processes else 0)
    restored = run_restore(repo, result.restore_point, tmp_path / "out", options)
    assert restored.status == "success", restored.errors
    assert restore_pools == ([1] if in_processes else [])
    out = tmp_path / "out" / "holey"
    assert out.read_bytes() == (src / "holey").read_bytes()
    assert out.stat().st_blocks * 512 < 1 << 20  # still sparse
    assert (tmp_path / "out" / "plain").read_bytes() == b"plain"


@pytest.mark.parametrize("in_processes", [False, True], ids=["threads", "processes"])
def test_a_batch_of_small_files_ending_with_a_large_one_restores_them_all(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pools: list[int],
    in_processes: bool,
) -> None:
    """Small files fetched with their batch and the large file that ends it (streamed,
    after the batch dropped the small files' chunks) all get their content, on the
    walk's threads and in a worker process."""
    from ferryman.engine import restore_walk

    small = {f"a-{i}": os.urandom(1000 + i) for i in range(5)}
    large = os.urandom(restore_walk.BATCH_BYTES + (1 << 20))
    point = _backup_files(repo, tmp_path / "src", {**small, "z-large": large})

    if in_processes:
        monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)  # scaled down
    options = RestoreOptions(processes=1 if in_processes else 0)
    restored = run_restore(repo, point, tmp_path / "out", options)
    assert restored.status == "success", restored.errors
    assert restore_pools == ([1] if in_processes else [])
    for name, data in small.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert (tmp_path / "out" / "z-large").read_bytes() == large
