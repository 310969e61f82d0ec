"""The walk helper process on re-runs: same trees, changes found, crashes harmless.

The helper is forced on (``SPLIT_MIN_ENTRIES = 0``) and, so that these small trees
really go through its verdicts, the scanner starts walking only once the helper
walked everything (``HelperRun``); in a real task neither waits for the other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ferryman.engine import walk_helper, walk_helper_proc
from ferryman.engine.backup import run_backup
from ferryman.engine.browse import list_path
from ferryman.engine.listing_cache import CompactListing, ListingCache
from ferryman.engine.options import BackupCancelled, BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.engine.scanner import Scanner
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource

from .trees import diff_trees


class HelperRun:
    """Forces the helper on and lets it finish before the scanner walks; records the
    helpers started and whether each walked the whole tree."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.finished: list[bool] = []
        self._monkeypatch = monkeypatch
        real_start = walk_helper.WalkHelper.start

        def start(*args: Any, **kwargs: Any) -> walk_helper.WalkHelper | None:
            helper = real_start(*args, **kwargs)
            if helper is not None:
                self.finished.append(helper.wait(60))
            return helper

        monkeypatch.setattr(walk_helper.WalkHelper, "start", start)
        self.on()

    def on(self) -> None:
        self._monkeypatch.setattr(walk_helper, "SPLIT_MIN_ENTRIES", 0)

    def off(self) -> None:
        self._monkeypatch.setattr(walk_helper, "SPLIT_MIN_ENTRIES", 1 << 62)


@pytest.fixture
def helper_run(monkeypatch: pytest.MonkeyPatch) -> HelperRun:
    return HelperRun(monkeypatch)


def _build(src: Path) -> None:
    for top in ("alpha", "beta", "gamma"):
        for sub in range(4):
            d = src / top / f"sub{sub}" / "deep" / "deeper"
            d.mkdir(parents=True)
            for i in range(6):
                (d.parent / f"f{i}").write_bytes(os.urandom(50 + i))
                (d / f"g{i}").write_bytes(os.urandom(70 + i))
            (d / "link").symlink_to("g0")
    (src / "beta" / "empty-dir").mkdir()
    (src / "beta" / "empty-file").write_bytes(b"")
    os.mkfifo(src / "gamma" / "fifo")
    os.link(src / "alpha" / "sub1" / "deep" / "f0", src / "gamma" / "sub2" / "hard")


def _backup(repo: Repository, src: Path, **options: Any) -> BackupResult:
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s", **options))
    assert result.status == "success", result.warnings
    return result


def _restores_as(repo: Repository, result: BackupResult, src: Path, out: Path) -> None:
    """The backup's restore point restores to a tree identical to ``src``."""
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, out)
    assert diff_trees(src, out) == []


def _counts(r: BackupResult) -> tuple[int, int, int, int, int]:
    s = r.stats
    return (s.files_scanned, s.dirs_scanned, s.bytes_scanned, s.files_unchanged, s.files_read)


def _reused(caplog: pytest.LogCaptureFixture) -> int:
    """Subtrees the scanner took from the helper's verdicts in the last task."""
    lines = [r.getMessage() for r in caplog.records if r.name == walk_helper.__name__]
    last = [m for m in lines if m.startswith("walk helper:")][-1]
    return int(last.split()[2])


def test_rerun_reuses_the_helpers_subtrees_with_the_same_tree_and_counts(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = tmp_path / "src"
    _build(src)
    caplog.set_level(logging.INFO, logger=walk_helper.__name__)
    _backup(repo, src)  # no parent: no helper
    assert helper_run.finished == []
    helper_run.off()
    alone = _backup(repo, src)
    helper_run.on()
    again = _backup(repo, src)
    assert helper_run.finished == [True]
    assert again.root_tree == alone.root_tree
    # the subtrees without the hard link: reused whole
    assert _reused(caplog) >= 2
    assert _counts(again) == _counts(alone)
    assert again.stats.files_read == 0


def test_a_deep_change_in_the_helpers_part_is_backed_up(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = tmp_path / "src"
    _build(src)
    caplog.set_level(logging.INFO, logger=walk_helper.__name__)
    _backup(repo, src)
    _backup(repo, src)
    # the helper walks from the end: changes deep in its part (gamma, beta)
    with open(src / "gamma" / "sub3" / "deep" / "deeper" / "g4", "ab") as f:
        f.write(b"appended")
    (src / "beta" / "sub2" / "deep" / "deeper" / "new").write_bytes(b"new file")
    os.unlink(src / "gamma" / "sub0" / "deep" / "f5")
    changed = _backup(repo, src)
    assert helper_run.finished[-1] is True
    assert _reused(caplog) >= 2  # alpha and the untouched subtrees of beta and gamma
    assert changed.stats.files_read == 2  # the appended and the new file
    helper_run.off()
    alone = _backup(repo, src)
    assert alone.root_tree == changed.root_tree
    assert _counts(alone)[:3] == _counts(changed)[:3]
    _restores_as(repo, changed, src, tmp_path / "out")


def test_masks_are_applied_by_the_helper_as_by_the_scanner(
    repo: Repository, tmp_path: Path, helper_run: HelperRun, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    _build(src)
    caplog.set_level(logging.INFO, logger=walk_helper.__name__)
    masks: dict[str, Any] = {"exclude": ["g3", "beta/sub1"], "include": ["f*", "g*"]}
    _backup(repo, src, **masks)
    helper_run.off()
    first = _backup(repo, src, **masks)
    helper_run.on()
    again = _backup(repo, src, **masks)
    assert again.root_tree == first.root_tree
    assert _reused(caplog) >= 2
    # an excluded file changing is no change; an included one is
    (src / "alpha" / "sub0" / "deep" / "deeper" / "g3").write_bytes(b"excluded")
    (src / "beta" / "sub1" / "deep" / "f1").write_bytes(b"excluded dir")
    assert _backup(repo, src, **masks).root_tree == first.root_tree
    (src / "gamma" / "sub0" / "deep" / "deeper" / "g2").write_bytes(b"included")
    changed = _backup(repo, src, **masks)
    helper_run.off()
    alone = _backup(repo, src, **masks)
    assert alone.root_tree == changed.root_tree != first.root_tree
    assert changed.stats.files_read == 1


@pytest.mark.parametrize(
    ("after", "reason"), [("1", "exit 70"), ("5", "exit 70"), ("garbage", "unreadable output")]
)
def test_a_helper_dying_mid_walk_leaves_the_walk_to_the_scanner(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    after: str,
    reason: str,
) -> None:
    """The helper exits in the middle of a message after ``after`` verdicts, or sends
    what is not msgpack: the task ends Success with every entry, the same tree, and
    a logged warning."""
    src = tmp_path / "src"
    _build(src)
    caplog.set_level(logging.INFO, logger=walk_helper.__name__)
    _backup(repo, src)
    first = _backup(repo, src)
    monkeypatch.setenv(walk_helper.CRASH_AFTER_ENV, after)
    os.unlink(src / "alpha" / "sub0" / "deep" / "f3")  # a change in the scanner's part too
    crashed = _backup(repo, src)
    assert helper_run.finished[-1] is False
    failed = f"walk helper process failed ({reason}"
    assert any(r.getMessage().startswith(failed) for r in caplog.records)
    helper_run.off()
    alone = _backup(repo, src)
    assert crashed.root_tree == alone.root_tree != first.root_tree
    assert _counts(crashed)[:4] == _counts(alone)[:4]


def test_a_helper_that_cannot_start_leaves_the_walk_to_the_scanner(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    helper_run.off()
    first = _backup(repo, src)
    helper_run.on()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    again = _backup(repo, src)
    assert again.root_tree == first.root_tree
    assert helper_run.finished == []
    assert any("walk helper process not started" in r.getMessage() for r in caplog.records)


def test_small_shares_walk_in_one_process(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    real_start = walk_helper.WalkHelper.start

    def start(*args: Any, **kwargs: Any) -> walk_helper.WalkHelper | None:
        started.append(1)
        return real_start(*args, **kwargs)

    monkeypatch.setattr(walk_helper.WalkHelper, "start", start)
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    _backup(repo, src)  # ~100 entries, far below SPLIT_MIN_ENTRIES
    assert started == []
    monkeypatch.setattr(walk_helper, "SPLIT_MIN_ENTRIES", 100)  # the parent saw 117
    _backup(repo, src)
    assert started == [1]


def test_permission_denied_in_the_helpers_part_is_reported(tmp_path: Path) -> None:
    """Real EACCES: the backups run without the capabilities that bypass file
    permissions (as root: dropped with ``setpriv``); a directory and a file locked
    deep in the helper's part are warned about on the re-run, and the helper did
    run, to the end."""
    drop = "-dac_override,-dac_read_search"
    wrap: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed"
        wrap = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]
    src = tmp_path / "src"
    _build(src)
    work = tmp_path / "work"
    script = textwrap.dedent(
        f"""
        import json, os
        from ferryman.engine import walk_helper
        from ferryman.engine.backup import run_backup
        from ferryman.engine.options import BackupOptions
        from ferryman.repository import Repository, open_backend
        from ferryman.sources.local import LocalSource
        finished = []
        real_start = walk_helper.WalkHelper.start
        def start(*args, **kwargs):
            helper = real_start(*args, **kwargs)
            finished.append(helper is not None and helper.wait(60))
            return helper
        walk_helper.WalkHelper.start = start
        walk_helper.SPLIT_MIN_ENTRIES = 0
        repo = Repository.init(open_backend({str(work / "repo")!r}), "p",
                               scrypt_n=1 << 10, cache_dir={str(work / "cache")!r})
        src = {str(src)!r}
        run_backup(LocalSource(src), repo, BackupOptions(share="s"))
        os.chmod(src + "/gamma/sub3/deep/deeper", 0)
        os.chmod(src + "/beta/sub2/deep/f1", 0)
        r = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
        print(json.dumps({{"status": r.status, "finished": finished,
                          "warnings": {{w.path: w.reason for w in r.warnings}}}}))
        """
    )
    proc = subprocess.run(
        [*wrap, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["finished"] == [True], proc.stderr
        assert out["status"] == "warning"
        assert set(out["warnings"]) == {"gamma/sub3/deep/deeper", "beta/sub2/deep/f1"}
        assert all("permission denied" in r for r in out["warnings"].values()), out
    finally:
        os.chmod(src / "gamma" / "sub3" / "deep" / "deeper", 0o755)  # for tmp_path cleanup


def test_one_file_system_in_the_helpers_part(
    repo: Repository, tmp_path: Path, helper_run: HelperRun, caplog: pytest.LogCaptureFixture
) -> None:
    """A mount point deep in the helper's part: kept empty with one-file-system, its
    content backed up without, on re-runs the same as the scanner alone gives."""
    src = tmp_path / "src"
    _build(src)
    mnt = src / "gamma" / "sub1" / "deep" / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        (mnt / "elsewhere").write_bytes(b"other fs")
        caplog.set_level(logging.INFO, logger=walk_helper.__name__)
        for one_fs, inside in ((True, []), (False, [b"elsewhere"])):
            _backup(repo, src, one_file_system=one_fs)
            helper_run.off()
            alone = _backup(repo, src, one_file_system=one_fs)
            helper_run.on()
            again = _backup(repo, src, one_file_system=one_fs)
            assert helper_run.finished[-1] is True
            assert _reused(caplog) >= 2
            assert again.root_tree == alone.root_tree
            assert again.restore_point is not None
            listed = list_path(repo, again.restore_point, "gamma/sub1/deep/mnt")
            assert [n.name for n in listed] == inside
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- the helper's comparison, case by case (its process code, run in this one) --------


def _record(name: bytes, st: os.stat_result) -> dict[str, Any]:
    """The record the scanner stores for an entry (the fields ``unchanged`` reads)."""
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "x"
    m: dict[str, Any] = {"n": name, "t": kind, "mt": st.st_mtime_ns, "ct": st.st_ctime_ns}
    m.update({"i": st.st_ino, "m": st.st_mode, "r": st.st_rdev})
    if kind == "file":
        m["s"] = st.st_size
    if kind == "dir":
        m["st"] = [os.fsencode(f"tree:{st.st_ino}")]
    return m


def _cache_listings(root: Path, cache: ListingCache) -> bytes:
    """Store the compact listing of every directory under ``root`` as it is now (its
    tree blob id ``tree:<inode>``); the root's id."""
    for dirpath, _dirs, _files in os.walk(os.fsencode(root)):
        names = sorted(os.listdir(dirpath))
        maps = [_record(n, os.lstat(os.path.join(dirpath, n))) for n in names]
        cache.put(os.fsencode(f"tree:{os.lstat(dirpath).st_ino}"), CompactListing.from_maps(maps))
    return os.fsencode(f"tree:{root.lstat().st_ino}")


def _helper_verdicts(root: Path, db: Path, root_id: bytes) -> set[bytes]:
    """The directories the helper finds unchanged under ``root``."""
    helper = walk_helper_proc._Helper(
        {"db": str(db), "one_fs": False, "dev": 0, "exc": [None, None], "inc": None}
    )
    got: set[bytes] = set()
    helper.verdict = lambda f: got.add(f.rel)  # type: ignore[method-assign]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        helper.walk(fd, (root_id,))
    finally:
        os.close(fd)
        helper.conn.close()
    return got


def _same_times(path: Path) -> Callable[[], None]:
    st = path.lstat()
    return lambda: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _rewrite_same_size(d: Path) -> None:  # touch -r / rsync -t: ctime only
    reset = _same_times(d / "f1")
    (d / "f1").write_bytes(b"X" * (d / "f1").stat().st_size)
    reset()


def _replace_by_copy(d: Path) -> None:  # same size and times, another inode
    shutil.copy2(d / "f1", d / "f1.new")
    os.rename(d / "f1.new", d / "f1")


def _retarget_symlink(d: Path) -> None:  # a target of the same length, same mtime
    reset = _same_times(d / "link")
    os.unlink(d / "link")
    os.symlink("f2", d / "link")
    reset()


def _replace(path: Path, make: Callable[[Path], object]) -> None:
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    make(path)


def _xattr_only(d: Path) -> None:
    try:
        os.setxattr(d / "f1", "user.note", b"v")
    except OSError as exc:
        pytest.skip(f"no user xattrs here: {exc}")


def _names(change: Callable[[Path], object]) -> Callable[[Path], None]:
    """``change`` the names, then put the directory's mtime back (``touch -d``)."""

    def run(d: Path) -> None:
        reset = _same_times(d)
        change(d)
        reset()

    return run


CHANGES: dict[str, Callable[[Path], object]] = {
    "content, mtime put back": _rewrite_same_size,
    "xattr only": _xattr_only,
    "mode": lambda d: os.chmod(d / "f1", 0o600),
    "replaced by a copy": _replace_by_copy,
    "symlink target of the same length": _retarget_symlink,
    "second hard link": lambda d: os.link(d / "f1", d.parent / "elsewhere"),
    "file -> dir": lambda d: _replace(d / "f1", os.mkdir),
    "dir -> file": lambda d: _replace(d / "sub", lambda p: p.write_bytes(b"")),
    "fifo -> another fifo": lambda d: _replace(d / "fifo", os.mkfifo),
    "name added": _names(lambda d: (d / "f0").write_bytes(b"")),
    "name removed": _names(lambda d: os.unlink(d / "f2")),
    "name renamed": _names(lambda d: os.rename(d / "f2", d / "f3")),
    "non-UTF-8 name changed": lambda d: (d / os.fsdecode(b"\xff\xfe")).write_bytes(b"2"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_helper_finds_every_change_the_scanner_finds(tmp_path: Path, change: str) -> None:
    """No verdict on a directory with a change of any kind the scanner's comparison
    (``unchanged``, names by merge) sees, nor on its parents, even when the
    directory's own stat is as cached; one on every untouched directory."""
    root = tmp_path / "root"
    d = root / "top" / "d"
    (d / "sub").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "other" / "g").write_bytes(b"g")
    for name in ("f1", "f2"):
        (d / name).write_bytes(b"content " + name.encode())
    (d / "link").symlink_to("f1")
    os.mkfifo(d / "fifo")
    (d / os.fsdecode(b"\xff\xfe")).write_bytes(b"1")
    cache = ListingCache(tmp_path / "listings.sqlite")
    root_id = _cache_listings(root, cache)
    cache.close()
    db = tmp_path / "listings.sqlite"
    assert _helper_verdicts(root, db, root_id) == {b"other", b"top/d/sub", b"top/d", b"top"}
    CHANGES[change](d)
    # the worst case: the directory's own stat as cached (mtime and ctime put back),
    # only its content tells (the scanner checks the directory's stat itself)
    cache = ListingCache(db)
    parent = os.fsencode(d.parent)
    top = [_record(n, os.lstat(os.path.join(parent, n))) for n in sorted(os.listdir(parent))]
    cache.put(os.fsencode(f"tree:{d.parent.lstat().st_ino}"), CompactListing.from_maps(top))
    cache.close()
    verdicts = _helper_verdicts(root, db, root_id)
    assert b"other" in verdicts
    assert not verdicts & {b"top/d", b"top"}


def test_a_ctime_only_change_in_the_helpers_part_is_backed_up(
    repo: Repository, tmp_path: Path, helper_run: HelperRun
) -> None:
    """Same size, mtime put back (``touch -r``), in a directory whose stat does not
    change: only the file's ctime tells; the helper must not vouch for its subtree."""
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    first = _backup(repo, src)
    path = src / "gamma" / "sub3" / "deep" / "deeper" / "g4"
    reset = _same_times(path)
    path.write_bytes(b"Z" * path.stat().st_size)
    reset()
    changed = _backup(repo, src)
    assert helper_run.finished[-1] is True
    assert changed.stats.files_read == 1
    assert changed.root_tree != first.root_tree
    assert changed.restore_point is not None
    run_restore(repo, changed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_a_directory_replaced_after_the_helpers_verdict_is_walked(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The helper found ``gamma`` unchanged; then, before the scanner gets there,
    ``gamma`` is replaced by a copy (same names, sizes and times) with one file's
    content changed: the scanner's own lstat of ``gamma`` (another inode and ctime)
    does not match the previous record, so the verdict is not taken."""
    src = tmp_path / "src"
    _build(src)
    os.unlink(src / "gamma" / "sub2" / "hard")  # so that the helper vouches for gamma
    os.unlink(src / "gamma" / "fifo")  # copytree does not copy it
    caplog.set_level(logging.INFO, logger=walk_helper.__name__)
    _backup(repo, src)
    first = _backup(repo, src)
    started = walk_helper.WalkHelper.start  # HelperRun's: it waits for the helper

    def start(*args: Any, **kwargs: Any) -> walk_helper.WalkHelper | None:
        helper = started(*args, **kwargs)
        assert helper is not None and helper._verdicts.get(b"gamma") is not None
        shutil.copytree(src / "gamma", tmp_path / "copy", symlinks=True)
        path = tmp_path / "copy" / "sub3" / "deep" / "deeper" / "g4"
        reset = _same_times(path)
        path.write_bytes(b"Z" * path.stat().st_size)
        reset()
        shutil.rmtree(src / "gamma")
        os.rename(tmp_path / "copy", src / "gamma")
        return helper

    monkeypatch.setattr(walk_helper.WalkHelper, "start", start)
    changed = _backup(repo, src)
    assert helper_run.finished[-1] is True
    assert changed.root_tree != first.root_tree
    assert changed.restore_point is not None
    run_restore(repo, changed.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def _fake_helper(messages: list[Any]) -> walk_helper.WalkHelper:
    """A WalkHelper on a process that sends ``messages`` (length-prefixed msgpack)."""
    body = b"".join(
        len(m).to_bytes(4, "big") + m
        for m in (msgpack.packb(x, use_bin_type=True) for x in messages)
    )
    code = f"import os; os.write(1, {body!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return walk_helper.WalkHelper(proc)


def test_a_verdict_is_taken_only_for_the_tree_blobs_it_compared_with() -> None:
    """A verdict names the previous tree blobs the helper compared with: a directory
    whose previous record has others (another previous tree) is walked; non-UTF-8
    paths come through as they are."""
    rel = b"a/\xff\xfe"
    helper = _fake_helper([[[rel, [b"blob-1", b"blob-2"], 0, 1, 2, 30, 2]], None])
    try:
        assert helper.wait(30) is True
        assert helper.take(rel, {"st": [b"blob-1"]}) is None
        assert helper.take(rel, {"st": [b"blob-2", b"blob-1"]}) is None
        assert helper.take(b"a", {"st": [b"blob-1", b"blob-2"]}) is None
        assert helper.take(rel, {"st": [b"blob-1", b"blob-2"]}) == walk_helper.Verdict(
            (b"blob-1", b"blob-2"), 1, 2, 30, 2
        )
    finally:
        helper.close()


@pytest.mark.parametrize("end", ["success", "cancel", "exception"])
def test_the_helper_is_reaped_and_its_pipes_closed_however_the_walk_ends(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """Still walking or done, on success, a cancel or an exception in the scanner: the
    helper process is waited for (no zombie) and the scanner's ends of its pipes are
    closed."""
    src = tmp_path / "src"
    _build(src)
    for i in range(300):  # past the scanner's first cancel check (every 256 entries)
        (src / "alpha" / f"many{i}").write_bytes(b"x")
    _backup(repo, src)
    cancel = threading.Event()
    helpers: list[walk_helper.WalkHelper] = []
    real_start = walk_helper.WalkHelper.start

    def start(*args: Any, **kwargs: Any) -> walk_helper.WalkHelper | None:
        helper = real_start(*args, **kwargs)
        assert helper is not None
        helpers.append(helper)
        if end == "cancel":
            cancel.set()
        return helper

    monkeypatch.setattr(walk_helper.WalkHelper, "start", start)
    monkeypatch.setattr(walk_helper, "SPLIT_MIN_ENTRIES", 0)
    if end == "exception":

        def entry(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("scanner bug")

        monkeypatch.setattr(Scanner, "_entry", entry)
    if end == "success":
        _backup(repo, src)
    else:
        with pytest.raises(BackupCancelled if end == "cancel" else RuntimeError):
            run_backup(LocalSource(src), repo, BackupOptions(share="s"), cancel=cancel)
    [helper] = helpers
    proc = helper._proc
    assert proc.returncode is not None
    assert proc.stdin is not None and proc.stdin.closed
    assert proc.stdout is not None and proc.stdout.closed
    assert proc.stderr is not None and proc.stderr.closed


def test_a_helper_dead_at_start_is_reaped_and_its_pipes_closed(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The helper dies before it reads its setup (the write to it fails): the scanner
    walks alone, and every pipe to the process is closed."""
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    first = _backup(repo, src)
    procs: list[subprocess.Popen[bytes]] = []

    class DeadAtStart(subprocess.Popen[bytes]):
        def __init__(self, args: list[str], **kwargs: Any) -> None:
            super().__init__(args, **kwargs)
            if walk_helper._CHILD in args:
                procs.append(self)
                self.kill()
                self.wait()  # dead, its end of the setup pipe closed

    monkeypatch.setattr(subprocess, "Popen", DeadAtStart)
    monkeypatch.setattr(walk_helper, "SPLIT_MIN_ENTRIES", 0)
    again = _backup(repo, src)
    assert again.root_tree == first.root_tree
    assert any("walk helper process failed at start" in r.getMessage() for r in caplog.records)
    [proc] = procs
    assert proc.stdin is not None and proc.stdin.closed
    assert proc.stdout is not None and proc.stdout.closed
    assert proc.stderr is not None and proc.stderr.closed


def test_a_subdirectory_vouched_for_then_changed_is_walked_with_its_listing(
    repo: Repository,
    tmp_path: Path,
    helper_run: HelperRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listings of subdirectories the helper found unchanged are not read ahead
    with their parent's. When one of them changes before the scanner gets there (a
    file added: its stat no longer matches, the verdict is not taken), the scanner
    walks it with its previous listing, asked for then: only the changed and the new
    file are read, the rest is reused, and it restores as the source."""
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    second = _backup(repo, src)
    assert second.restore_point is not None
    before = {n.name: n.subtrees for n in list_path(repo, second.restore_point, b"beta")}
    with open(src / "beta" / "sub0" / "f0", "ab") as f:
        f.write(b"more")  # beta changed: the helper vouches for sub1..sub3, not beta
    started = walk_helper.WalkHelper.start  # HelperRun's: it waits for the helper
    vouched: list[tuple[bytes, ...]] = []

    def start(*args: Any, **kwargs: Any) -> walk_helper.WalkHelper | None:
        helper = started(*args, **kwargs)
        assert helper is not None and helper._verdicts.get(b"beta") is None
        verdict = helper._verdicts.get(b"beta/sub2")
        assert verdict is not None
        vouched.append(verdict.subtrees)
        (src / "beta" / "sub2" / "added").write_bytes(b"new since the helper's look")
        return helper

    asked: list[bytes] = []
    ahead: list[bytes] = []
    real_get, real_read_ahead = ListingCache.get, ListingCache.read_ahead

    def read_ahead(self: ListingCache, blob_ids: list[bytes]) -> None:
        ahead.extend(blob_ids)
        real_read_ahead(self, blob_ids)

    def get(self: ListingCache, blob_id: bytes) -> CompactListing | None:
        if blob_id not in self._ahead:
            asked.append(blob_id)
        return real_get(self, blob_id)

    monkeypatch.setattr(walk_helper.WalkHelper, "start", start)
    monkeypatch.setattr(ListingCache, "get", get)
    monkeypatch.setattr(ListingCache, "read_ahead", read_ahead)
    changed = _backup(repo, src)
    assert helper_run.finished[-1] is True
    assert set(vouched[0]) <= set(asked)  # not read ahead: asked for when needed
    assert vouched[0] == tuple(before[b"sub2"]) and not set(vouched[0]) & set(ahead)
    # the subdirectory the helper did not vouch for is still read ahead; those whose
    # verdicts were taken are never read (neither ahead nor when walked)
    assert set(before[b"sub0"]) <= set(ahead) and not set(before[b"sub0"]) & set(asked)
    for sub in (b"sub1", b"sub3"):
        assert before[sub] and not set(before[sub]) & (set(ahead) | set(asked))
    assert changed.stats.files_read == 2  # sub2's other files: from its listing
    _restores_as(repo, changed, src, tmp_path / "out")
