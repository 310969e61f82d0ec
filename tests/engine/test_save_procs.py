"""Small files read, cut, hashed and compressed by real saver processes (save_procs)."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import pytest

from ferryman.engine import file_saver
from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.engine.small_files import CHANGED_WARNING, ScanStat, Tally, read_small_file
from ferryman.repository import BlobNotFound, Repository
from ferryman.sources.local import LocalSource

from .conftest import PASSPHRASE
from .trees import build_awkward_tree, diff_trees

STARTED = "small files go to 2 saver processes"
SAVED = "saver processes saved"
FELL_BACK = "saving small files with threads"


@pytest.fixture
def procs_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    """Every small-file batch (of at most 3 files) goes to the saver processes."""
    monkeypatch.setattr(file_saver, "PROCESS_AFTER_FILES", 0)
    monkeypatch.setattr(file_saver, "BATCH_FILES", 3)
    monkeypatch.setattr(file_saver, "PROCESS_BATCH_FILES", 3)
    caplog.set_level(logging.INFO, logger="ferryman.engine.file_saver")
    return caplog


def _backup(src: Path, repo: Repository, share: str, processes: int) -> BackupResult:
    return run_backup(LocalSource(src), repo, BackupOptions(share=share, processes=processes))


def _restores_identical(repo: Repository, result: BackupResult, src: Path, out: Path) -> None:
    """The backup's restore point restores ``src`` byte for byte and field by field."""
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, out)
    assert diff_trees(src, out) == []


def _before_each_batch(
    monkeypatch: pytest.MonkeyPatch, hook: Callable[[file_saver.FileSaver, list[bytes]], None]
) -> None:
    """Run ``hook(saver, file names of the batch)`` in the parent just before a batch leaves
    the scanner (after the scan's lstat, before any read): a change made there reaches
    a saver process exactly as a change made by another program would."""
    real = file_saver.FileSaver.flush_batch

    def flush(self: file_saver.FileSaver) -> None:
        paths = [it.name for it in self._batch]
        if paths:
            hook(self, paths)
        real(self)

    monkeypatch.setattr(file_saver.FileSaver, "flush_batch", flush)


def test_awkward_tree_round_trip_through_saver_processes(
    repo: Repository, tmp_path: Path, procs_log: pytest.LogCaptureFixture
) -> None:
    """Byte for byte and field by field; the chunks equal the threads' chunks."""
    src = tmp_path / "src"
    build_awkward_tree(src)
    odd = os.path.join(bytes(src), b"caf\xe9-\xff dir")
    os.mkdir(odd)
    for i in range(7):
        with open(os.path.join(odd, b"\xfe\xff-%d\n.txt" % i), "wb") as f:
            f.write(b"non-UTF-8 names %d\n" % i * (i * 700 + 1))
    # one content three times in a row: at least two of them in one batch (of 3), where
    # its chunk is stored once but referenced (counted) once per file
    for i in range(3):
        with open(os.path.join(odd, b"same-%d" % i), "wb") as f:
            f.write(b"the same content\n" * 4000)
    for _ in os.walk(src):  # list every directory once: its atime settles (relatime)
        pass
    result = _backup(src, repo, "p", processes=2)
    assert result.status == "success", result.warnings
    assert STARTED in procs_log.text and SAVED in procs_log.text
    assert FELL_BACK not in procs_log.text
    assert result.restore_point is not None
    # the same files through the threads (before diff_trees reads them: file atimes)
    # find every chunk stored: same cuts, same ids
    threads = _backup(src, repo, "t", processes=0)
    assert threads.stats.files_read == result.stats.files_read
    assert threads.stats.bytes_read == result.stats.bytes_read
    assert result.stats.seconds_source_read > 0 and result.stats.seconds_processing > 0
    assert threads.stats.chunks_new == 0 and threads.stats.bytes_new == 0
    # every chunk reference counted alike (new or deduplicated), and every file node
    # (content, size, xattrs, metadata) equal: the same root tree, the same warnings
    assert (
        result.stats.chunks_new + result.stats.chunks_deduplicated
        == threads.stats.chunks_deduplicated
    )
    assert result.stats.bytes_new + result.stats.bytes_deduplicated == (
        threads.stats.bytes_deduplicated
    )
    assert threads.root_tree == result.root_tree
    assert threads.warnings == result.warnings
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out)
    assert restored.status == "success", restored.errors
    assert diff_trees(src, out) == []


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_vanished_and_changed_files_warn_as_with_threads(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
    processes: int,
) -> None:
    """Between scan and read: a file removed, a file rewritten once (read again, no
    warning), a file growing all the time (read again, then kept with a warning)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "gone", "rewritten", "z"):
        (src / name).write_bytes(name.encode() * 100)
    busy = src / "busy.log"
    busy.write_bytes(b"start\n")
    stop = threading.Event()

    def append() -> None:
        with open(busy, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x" * 4096)

    def change(_saver: file_saver.FileSaver, paths: list[bytes]) -> None:
        if b"gone" in paths:
            (src / "gone").unlink()
        if b"rewritten" in paths:
            (src / "rewritten").write_bytes(b"new content, another size")

    _before_each_batch(monkeypatch, change)
    appender = threading.Thread(target=append, daemon=True)
    appender.start()
    try:
        result = _backup(src, repo, "s", processes=processes)
    finally:
        stop.set()
        appender.join()
    reasons = {w.path: w.reason for w in result.warnings}
    assert reasons.pop("gone") == "vanished before it could be read"
    busy_reason = reasons.pop("busy.log", None)  # read twice while growing: warned
    assert busy_reason in (None, CHANGED_WARNING)
    assert reasons == {}
    assert (SAVED in procs_log.text) == (processes > 0)
    assert FELL_BACK not in procs_log.text
    assert result.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, result.restore_point, out)
    assert sorted(os.listdir(out)) == ["a", "busy.log", "rewritten", "z"]
    assert (out / "rewritten").read_bytes() == b"new content, another size"
    assert (out / "busy.log").read_bytes().startswith(b"start\nxxxx")


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_same_size_and_mtime_changes_between_scan_and_read_are_read_again(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
    processes: int,
) -> None:
    """Between scan and read, a file rewritten in place and a file replaced by another
    (rename), each with the same size and its mtime put back: only the ctime (and the
    inode) tell. Each is read once more and stored as it is now, no warning, in the
    saver processes (which get the scan's numbers, not its os.stat_result) as on the
    threads."""
    src = tmp_path / "src"
    src.mkdir()
    names = ("a", "replaced", "rewritten", "z")
    for name in names:
        (src / name).write_bytes(b"old %-20s" % name.encode())
    changed: dict[bytes, bytes] = {}

    def change(_saver: file_saver.FileSaver, paths: list[bytes]) -> None:
        for name in (b"replaced", b"rewritten"):
            if name not in paths or name in changed:
                continue
            path = src / name.decode()
            st = os.stat(path)
            new = changed[name] = b"NEW %-20s" % name
            if name == b"rewritten":
                with open(path, "r+b") as f:
                    f.write(new)
            else:
                (tmp_path / "new").write_bytes(new)
                os.replace(tmp_path / "new", path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            while os.stat(path).st_ctime_ns == st.st_ctime_ns:  # within one clock tick
                time.sleep(0.005)
                os.chmod(path, os.stat(path).st_mode)  # the ctime only

    _before_each_batch(monkeypatch, change)
    result = _backup(src, repo, "s", processes=processes)
    assert sorted(changed) == [b"replaced", b"rewritten"]
    assert result.warnings == []
    assert result.stats.files_read == len(names) + 2  # the two changed ones twice
    assert (SAVED in procs_log.text) == (processes > 0)
    assert FELL_BACK not in procs_log.text
    assert result.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, result.restore_point, out)
    assert {n: (out / n).read_bytes() for n in names} == {
        n: changed.get(n.encode(), b"old %-20s" % n.encode()) for n in names
    }


@pytest.mark.parametrize("field", ["st_size", "st_mtime_ns", "st_ctime_ns", "st_ino"])
def test_a_scan_stat_differing_in_any_field_reads_the_file_again(
    tmp_path: Path, field: str
) -> None:
    """The scan's numbers a saver process gets (``ScanStat``) are compared with the
    fstat after the read field by field, as the threads compare the os.stat_result:
    one that differs in any of them (a file no longer the one the scan saw) has the
    file read once more, and kept as read then (it matches its fstat: no warning);
    the same numbers: read once."""
    content = b"content\n" * 100
    (tmp_path / "f").write_bytes(content)
    st = os.lstat(tmp_path / "f")
    scan = ScanStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    folder = LocalSource(tmp_path).open_root()
    try:
        once: Tally = {}
        r = read_small_file(folder, b"f", scan, once, read_xattrs=False)
        assert (r.data, r.changed, r.error, once["files_read"]) == (content, False, None, 1)
        twice: Tally = {}
        other = scan._replace(**{field: getattr(scan, field) + 1})
        r = read_small_file(folder, b"f", other, twice, read_xattrs=False)
        assert (r.data, r.changed, r.error, twice["files_read"]) == (content, False, None, 2)
    finally:
        folder.release()


def test_unreadable_files_warn_as_with_threads(tmp_path: Path) -> None:
    """Real EACCES: the backups run in a child without the capability to bypass file
    permissions (root) or as the unprivileged user running the tests."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"ok{i}").write_bytes(b"readable %d\n" % i)
    (src / "secret").write_bytes(b"secret\n")
    os.chmod(src / "secret", 0o000)
    script = textwrap.dedent(
        f"""
        import json, logging, sys
        from ferryman.engine import file_saver
        from ferryman.engine.backup import run_backup
        from ferryman.engine.options import BackupOptions
        from ferryman.repository import Repository, open_backend
        from ferryman.sources.local import LocalSource
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        file_saver.PROCESS_AFTER_FILES = 0
        file_saver.BATCH_FILES = 2
        file_saver.PROCESS_BATCH_FILES = 2
        repo = Repository.init(open_backend({str(tmp_path / "repo")!r}), {PASSPHRASE!r},
                               scrypt_n=1 << 10, cache_dir={str(tmp_path / "cache")!r})
        out = {{}}
        for processes in (0, 2):
            r = run_backup(LocalSource({str(src)!r}), repo,
                           BackupOptions(share=str(processes), processes=processes))
            out[processes] = [r.status, r.stats.files_read,
                              {{w.path: w.reason for w in r.warnings}}]
        print(json.dumps(out))
        """
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE as root"
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = ["warning", 5, {"secret": "permission denied"}]
    assert out["0"] == expected and out["2"] == expected
    assert SAVED in proc.stderr and FELL_BACK not in proc.stderr


def test_saver_processes_denied_the_parents_descriptors_leave_the_work_to_threads(
    tmp_path: Path,
) -> None:
    """A parent that is not dumpable (prctl), without CAP_SYS_PTRACE: a worker may not
    open /proc/<parent>/fd/<n>. Its batches are saved on the threads, as if no
    process had been asked for: every file stored, no warning."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(b"readable %d\n" % i)
    script = textwrap.dedent(
        f"""
        import ctypes, json, logging, sys
        from ferryman.engine import file_saver
        from ferryman.engine.backup import run_backup
        from ferryman.engine.options import BackupOptions
        from ferryman.repository import Repository, open_backend
        from ferryman.sources.local import LocalSource
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        PR_SET_DUMPABLE = 4
        assert ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        file_saver.PROCESS_AFTER_FILES = 0
        file_saver.BATCH_FILES = 2
        file_saver.PROCESS_BATCH_FILES = 2
        repo = Repository.init(open_backend({str(tmp_path / "repo")!r}), {PASSPHRASE!r},
                               scrypt_n=1 << 10, cache_dir={str(tmp_path / "cache")!r})
        r = run_backup(LocalSource({str(src)!r}), repo, BackupOptions(share="s", processes=2))
        print(json.dumps([r.status, r.stats.files_read,
                          {{w.path: w.reason for w in r.warnings}}]))
        """
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop CAP_SYS_PTRACE as root"
        command = [setpriv, "--bounding-set", "-sys_ptrace", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == ["success", 8, {}]
    assert "saver process failed (PermissionError" in proc.stderr and FELL_BACK in proc.stderr


@pytest.mark.parametrize("swap", ["symlink", "directory"])
def test_directory_swapped_between_scan_and_read_is_not_followed(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
    swap: str,
) -> None:
    """A directory replaced after the scan opened it (by a symlink to a folder outside
    the source, or by another folder): its files are read from the directory the scan
    listed (now moved away), as a saver thread does; the replacement is never read."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "d").mkdir(parents=True)
    outside.mkdir()
    for name in ("a", "b", "c"):
        (src / "d" / name).write_bytes(b"inside " + name.encode())
        (outside / name).write_bytes(b"SECRET " + name.encode())
    (src / "e").write_bytes(b"after")
    swapped: list[bool] = []

    def replace(_saver: file_saver.FileSaver, paths: list[bytes]) -> None:
        if b"a" in paths and not swapped:  # d/a
            (src / "d").rename(tmp_path / "moved-away")
            if swap == "symlink":
                (src / "d").symlink_to(outside)
            else:
                shutil.copytree(outside, src / "d")
            swapped.append(True)

    _before_each_batch(monkeypatch, replace)
    result = _backup(src, repo, "s", processes=2)
    assert swapped
    assert result.warnings == []
    for name in ("a", "b", "c"):
        with pytest.raises(BlobNotFound):
            repo.get_blob(repo.blob_id(b"SECRET " + name.encode()))
    assert FELL_BACK not in procs_log.text
    assert SAVED in procs_log.text  # the processes did read them
    assert result.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, result.restore_point, out)
    assert (out / "e").read_bytes() == b"after"
    assert {n: (out / "d" / n).read_bytes() for n in "abc"} == {
        n: b"inside " + n.encode() for n in "abc"
    }


def test_killed_saver_process_loses_nothing(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
) -> None:
    """kill -9 of a saver process while it holds batches: they are saved here instead,
    the backup ends as if nothing happened, with the reason in the log."""
    src = tmp_path / "src"
    for i in range(60):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(500) * (i + 1))
    killed: list[int] = []
    real = file_saver.FileSaver.flush_batch

    def flush_then_kill(self: file_saver.FileSaver) -> None:
        real(self)
        pool = self._procs
        if pool is not None and not killed and self._small_files >= 12:
            pids = list(pool._processes)  # the executor's own record of its processes
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    monkeypatch.setattr(file_saver.FileSaver, "flush_batch", flush_then_kill)
    result = _backup(src, repo, "s", processes=2)
    assert killed
    assert result.status == "success", result.warnings
    assert result.stats.files_read == 60
    # the kill lands while a batch is with the worker, or (on a slow machine) while the
    # pool's first job is still pending: either way the pool breaks and the threads take
    # over, saying why
    assert FELL_BACK in procs_log.text
    assert "terminated abruptly" in procs_log.text
    _restores_identical(repo, result, src, tmp_path / "out")


def test_saver_processes_that_cannot_start_leave_the_work_to_threads(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
) -> None:
    """A worker that cannot reach the parent's descriptors fails in its initialiser:
    every batch is saved in this process and the reason is logged."""
    from ferryman.engine import save_procs

    real_setup = save_procs.worker_setup

    def no_root(*args: object) -> save_procs.WorkerSetup | None:
        setup = real_setup(*args)  # type: ignore[arg-type]
        assert setup is not None
        return dataclasses.replace(setup, parent_pid=0)  # there is no /proc/0

    monkeypatch.setattr(save_procs, "worker_setup", no_root)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(300 + i))
    result = _backup(src, repo, "s", processes=2)
    assert result.status == "success", result.warnings
    assert result.stats.files_read == 20
    assert FELL_BACK in procs_log.text
    _restores_identical(repo, result, src, tmp_path / "out")


def test_an_error_starting_the_saver_processes_does_not_stall_the_backup(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
) -> None:
    """Whatever goes wrong while starting the pool (here a TypeError), the batch that
    asked for it and every later one are saved on the threads: no batch is left waiting."""
    from ferryman.engine import save_procs

    def broken(*args: object) -> save_procs.WorkerSetup | None:
        raise TypeError("unexpected")

    monkeypatch.setattr(save_procs, "worker_setup", broken)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(200 + i))
    result = _backup(src, repo, "s", processes=2)
    assert result.status == "success", result.warnings
    assert result.stats.files_read == 20
    assert FELL_BACK in procs_log.text and "TypeError('unexpected')" in procs_log.text
    _restores_identical(repo, result, src, tmp_path / "out")


@pytest.mark.timeout(60)
def test_an_os_error_submitting_a_batch_does_not_stall_the_backup(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
) -> None:
    """``ProcessPoolExecutor.submit`` queues the job, then spawns a missing worker
    (spawn context), which can fail with an OSError (EAGAIN, EMFILE...): that batch
    and every later one are saved on the threads, none is left waiting."""
    from ferryman.engine import save_procs

    real_submit = save_procs.submit
    state = {"n": 0}

    def flaky_submit(
        pool: ProcessPoolExecutor, batch: list[save_procs.DirFiles]
    ) -> Future[save_procs.BatchResult]:
        job = real_submit(pool, batch)  # queued, as in the pool before it spawns
        state["n"] += 1
        if state["n"] == 2:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return job

    monkeypatch.setattr(save_procs, "submit", flaky_submit)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(200 + i))
    result = _backup(src, repo, "s", processes=2)
    assert state["n"] >= 2
    assert result.status == "success", result.warnings
    assert result.stats.files_read == 20
    assert FELL_BACK in procs_log.text and "Resource temporarily unavailable" in procs_log.text
    _restores_identical(repo, result, src, tmp_path / "out")


def test_saver_processes_are_automatic_from_four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 2 cores they cost CPU and memory for no time (decision 0011): threads there."""
    monkeypatch.setattr("ferryman.engine.options.os.cpu_count", lambda: 2)
    assert BackupOptions(share="s", workers=2).saver_processes() == 0
    assert BackupOptions(share="s", workers=2, processes=2).saver_processes() == 2
    monkeypatch.setattr("ferryman.engine.options.os.cpu_count", lambda: 8)
    assert BackupOptions(share="s", workers=8).saver_processes() == 8
    assert BackupOptions(share="s", workers=3).saver_processes() == 3
    assert BackupOptions(share="s", workers=8, processes=0).saver_processes() == 0


def test_directories_one_after_another_through_batches_are_told_apart(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    procs_log: pytest.LogCaptureFixture,
) -> None:
    """Many small directories in a row, some spanning two batches, each batch saved
    (its directories closed) before the walk goes on: a later directory gets the
    descriptor number of one in the previous batch, and is never taken for it (the
    previous batch's directories are not fstat'ed again, see file_saver._dir_files;
    keyed by descriptor number, 76 of the 80 files were "directory replaced")."""
    src = tmp_path / "src"
    for i in range(40):
        d = src / f"d{i:02}"
        d.mkdir(parents=True)
        for j in range(2):
            (d / f"f{j}").write_bytes(b"%d/%d\n" % (i, j) * (i + 1))
    real = file_saver.FileSaver.flush_batch

    def flush_and_wait(self: file_saver.FileSaver) -> None:
        real(self)  # then the batch is saved (its directories closed) before the walk goes on
        with self._procs_idle:
            self._procs_idle.wait_for(lambda: not self._procs_batches, timeout=10)

    monkeypatch.setattr(file_saver.FileSaver, "flush_batch", flush_and_wait)
    result = _backup(src, repo, "s", processes=2)
    assert result.warnings == []
    assert result.stats.files_read == 80
    assert SAVED in procs_log.text and FELL_BACK not in procs_log.text
    _restores_identical(repo, result, src, tmp_path / "out")
