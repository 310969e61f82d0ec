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
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ferryman.engine import walk_helper
from ferryman.engine.backup import run_backup
from ferryman.engine.browse import list_path
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
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
    assert changed.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, changed.restore_point, out)
    assert diff_trees(src, out) == []


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
