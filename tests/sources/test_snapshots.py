"""Backup from storage snapshots: btrfs on a real loop-device file system, nas-dir, command.

The btrfs tests use ``btrfs_mount`` (tests/conftest.py): a btrfs file system in a
sparse file on a loop device (root and ``btrfs-progs`` needed: skipped locally
without them, FAIL under ``CI=true``). The share is a subvolume; every backup goes
through the real ``btrfs subvolume snapshot -r`` / ``delete``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine.trees import diff_trees  # tests/ is on sys.path (rootdir-relative packages)

from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.sources.snapshots import (
    SnapshotError,
    SnapshotScope,
    SnapshotSource,
    make_provider,
    parse_snapshot,
)
from ferryman.sources.snapshots.command import CommandProvider

ROOT = Path(__file__).resolve().parents[2]


_share_ids = iter(range(1, 1 << 30))


@pytest.fixture
def subvolume(btrfs_mount: Path) -> Iterator[tuple[Path, int]]:
    """A btrfs subvolume used as the share, and a share id of its own."""
    share_id = next(_share_ids)
    path = btrfs_mount / f"share{share_id}"
    subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)
    yield path, share_id
    subprocess.run(["btrfs", "subvolume", "delete", str(path)], check=False, capture_output=True)


def _fill(root: Path, files: int = 40, size: int = 64 << 10) -> None:
    (root / "docs" / "deep").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        folder = root / "docs" if i % 2 else root / "docs" / "deep"
        (folder / f"f{i:03}.bin").write_bytes(os.urandom(size))
    (root / "big.img").write_bytes(os.urandom(4 << 20))
    os.symlink("docs/f001.bin", root / "link")


def _ours(snapdir: Path) -> list[str]:
    return (
        sorted(n for n in os.listdir(snapdir) if n.startswith("ferryman-"))
        if snapdir.exists()
        else []
    )


def _leftover_of_a_killed_task(
    share: Path, config: object, share_id: int, task: int, state: str
) -> str:
    """Run task ``task`` in a child that is killed (-9) while it holds its snapshot;
    returns the snapshot path the child printed (left behind by the kill)."""
    script = (
        "import time\n"
        "from ferryman.sources.snapshots import SnapshotScope, SnapshotSource, make_provider\n"
        f"src = SnapshotSource({str(share)!r}, make_provider({str(share)!r}, {config!r}), "
        f"SnapshotScope({share_id}, {task}, {state!r}))\n"
        "with src.snapshot() as view:\n"
        "    print(view.root.decode(), flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    leftover = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return leftover


def _restore(repo: Repository, point: str | None, target: Path) -> None:
    assert point is not None
    result = run_restore(repo, point, target)
    assert result.status == "success", result.errors


def test_btrfs_backup_is_consistent_while_a_writer_modifies_files(
    subvolume: tuple[Path, int], repo: Repository, tmp_path: Path
) -> None:
    share, share_id = subvolume
    _fill(share)
    source = SnapshotSource(
        str(share),
        make_provider(str(share), {"provider": "btrfs"}),
        SnapshotScope(share_id, 1, str(tmp_path / "state")),
    )
    stop = threading.Event()
    rewrites = 0

    def writer() -> None:  # rewrites every file of the live share, over and over
        nonlocal rewrites
        while not stop.is_set():
            for f in sorted((share / "docs").rglob("*.bin")):
                f.write_bytes(os.urandom(64 << 10))
                rewrites += 1
            with open(share / "big.img", "r+b") as img:
                img.write(os.urandom(1 << 20))
            (share / f"new-{rewrites}.txt").write_bytes(b"added during the backup")

    snapdir = share.parent / ".ferryman-snapshots"
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with source.snapshot() as view:
            assert _ours(snapdir) == [f"ferryman-s{share_id}-t1", f"ferryman-s{share_id}-t1.lock"]
            reference = tmp_path / "reference"  # the snapshot's content, as it is
            subprocess.run(["cp", "-a", os.fsdecode(view.root), str(reference)], check=True)
            result = run_backup(view, repo, BackupOptions(share="vol"))
    finally:
        stop.set()
        thread.join()
    assert rewrites > 40, "the writer did not run during the backup"
    assert _ours(snapdir) == []  # snapshot and its lock removed
    assert source.report.removed and source.report.path.endswith(f"ferryman-s{share_id}-t1")
    restored = tmp_path / "restored"
    _restore(repo, result.restore_point, restored)
    assert diff_trees(reference, restored) == []
    assert diff_trees(share, restored) != []  # the live share moved on meanwhile


def test_btrfs_incremental_reads_only_changed_files_and_cleans_a_killed_run(
    subvolume: tuple[Path, int], repo: Repository, tmp_path: Path
) -> None:
    share, share_id = subvolume
    _fill(share)
    state = str(tmp_path / "state")
    config = parse_snapshot("btrfs")
    assert config is not None
    snapdir = share.parent / ".ferryman-snapshots"

    def source(task: int) -> SnapshotSource:
        return SnapshotSource(
            str(share), make_provider(str(share), config), SnapshotScope(share_id, task, state)
        )

    first = run_backup(source(1), repo, BackupOptions(share="vol"))
    assert first.stats.files_read == 41
    assert _ours(snapdir) == []

    # a task killed (-9) while it reads its snapshot leaves the snapshot behind
    leftover = _leftover_of_a_killed_task(share, config, share_id, 2, state)
    assert os.path.isdir(leftover) and _ours(snapdir) == [
        f"ferryman-s{share_id}-t2",
        f"ferryman-s{share_id}-t2.lock",
    ]

    # a concurrent live task of the same share (a partition) is not a leftover
    live = source(4)
    with live.snapshot():
        assert live.report.leftovers_removed == [leftover]
        (share / "docs" / "f001.bin").write_bytes(b"changed")
        third = source(3)
        second = run_backup(third, repo, BackupOptions(share="vol"))
        assert third.report.leftovers_removed == []
        assert f"ferryman-s{share_id}-t4" in _ours(snapdir)
    assert _ours(snapdir) == []
    # unchanged files of a new snapshot keep inode and ctime: only the changed one is read
    assert second.stats.files_read == 1
    assert second.stats.files_unchanged == 40
    restored = tmp_path / "restored"
    _restore(repo, second.restore_point, restored)
    assert diff_trees(share, restored) == []


def test_btrfs_snapshot_removed_when_the_task_fails(
    subvolume: tuple[Path, int], tmp_path: Path
) -> None:
    share, share_id = subvolume
    (share / "f").write_bytes(b"x")
    source = SnapshotSource(
        str(share),
        make_provider(str(share), {"provider": "btrfs"}),
        SnapshotScope(share_id, 7, str(tmp_path)),
    )
    with pytest.raises(RuntimeError), source.snapshot():
        raise RuntimeError("repository went away")
    assert _ours(share.parent / ".ferryman-snapshots") == []


def test_btrfs_on_a_plain_folder_fails_clearly(btrfs_mount: Path, tmp_path: Path) -> None:
    plain = btrfs_mount / "plain-folder"
    plain.mkdir()
    source = SnapshotSource(
        str(plain),
        make_provider(str(plain), {"provider": "btrfs"}),
        SnapshotScope(999, 1, str(tmp_path)),
    )
    with (
        pytest.raises(
            SnapshotError,
            match=r"btrfs snapshot of .*plain-folder failed \(exit status \d+\): .*subvolume",
        ),
        source.snapshot(),
    ):
        pass
    assert _ours(btrfs_mount / ".ferryman-snapshots") == []


def test_nas_dir_reads_the_newest_matching_snapshot(repo: Repository, tmp_path: Path) -> None:
    share = tmp_path / "share"
    for name, age in [("auto-a", 300), ("auto-b", 100), ("auto-c", 200), ("manual-z", 0)]:
        snap = share / ".zfs" / "snapshot" / name
        snap.mkdir(parents=True)
        (snap / "which.txt").write_text(name)
        t = time.time() - age
        os.utime(snap, (t, t))
    (share / "which.txt").write_text("live")
    config = parse_snapshot("nas-dir:.zfs/snapshot/auto-*")
    assert config is not None
    source = SnapshotSource(
        str(share), make_provider(str(share), config), SnapshotScope(1, 1, str(tmp_path))
    )
    result = run_backup(source, repo, BackupOptions(share="nas"))
    restored = tmp_path / "restored"
    _restore(repo, result.restore_point, restored)
    assert (restored / "which.txt").read_text() == "auto-b"
    assert source.report.path == str(share / ".zfs" / "snapshot" / "auto-b")
    assert (share / ".zfs" / "snapshot" / "auto-b").is_dir()  # not ours: never deleted

    none = SnapshotSource(
        str(share),
        make_provider(str(share), {"provider": "nas-dir", "glob": ".snapshot/daily.*"}),
        SnapshotScope(1, 2, str(tmp_path)),
    )
    with pytest.raises(
        SnapshotError, match=r"no snapshot folder matches '\.snapshot/daily\.\*' under "
    ):
        run_backup(none, repo, BackupOptions(share="nas"))


CREATE = (
    'dest="$SNAPROOT/$FERRYMAN_SNAPSHOT_NAME"; '
    'cp -a --reflink=auto "$FERRYMAN_SHARE_PATH" "$dest"; echo "copied"; echo "$dest"'
)
DELETE = (
    'echo "$FERRYMAN_SNAPSHOT_NAME" >> "$SNAPROOT/deleted.log"; '
    'rm -rf -- "$SNAPROOT/$FERRYMAN_SNAPSHOT_NAME"'
)


def test_command_provider_backs_up_what_create_printed_and_deletes_it(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share, snaproot = tmp_path / "share", tmp_path / "snaps"
    snaproot.mkdir()
    monkeypatch.setenv("SNAPROOT", str(snaproot))
    _fill(share, files=6)
    config = parse_snapshot("command", CREATE, DELETE)
    assert config is not None
    source = SnapshotSource(
        str(share), make_provider(str(share), config), SnapshotScope(5, 11, str(tmp_path / "state"))
    )
    result = run_backup(source, repo, BackupOptions(share="cmd"))
    assert source.report.path == str(snaproot / "ferryman-s5-t11") and source.report.removed
    assert sorted(os.listdir(snaproot)) == ["deleted.log"]
    restored = tmp_path / "restored"
    _restore(repo, result.restore_point, restored)
    assert diff_trees(share, restored) == []


def test_command_provider_leftover_of_a_killed_task_is_deleted_next_run(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share, snaproot, state = tmp_path / "share", tmp_path / "snaps", str(tmp_path / "state")
    snaproot.mkdir()
    share.mkdir()
    (share / "a").write_text("a")
    monkeypatch.setenv("SNAPROOT", str(snaproot))
    config = {"provider": "command", "create": CREATE, "delete": DELETE}
    leftover = _leftover_of_a_killed_task(share, config, 5, 20, state)
    assert os.path.isdir(leftover)
    source = SnapshotSource(
        str(share), make_provider(str(share), config), SnapshotScope(5, 21, state)
    )
    run_backup(source, repo, BackupOptions(share="cmd"))
    assert source.report.leftovers_removed == [leftover]
    assert (snaproot / "deleted.log").read_text().split() == ["ferryman-s5-t20", "ferryman-s5-t21"]
    assert sorted(os.listdir(snaproot)) == ["deleted.log"]


def test_command_provider_errors_are_clear(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    scope = SnapshotScope(5, 30, str(tmp_path / "state"))

    def attempt(create: str, timeout: float = 30.0) -> str:
        source = SnapshotSource(
            str(share), CommandProvider(str(share), create, "true", timeout), scope
        )
        with pytest.raises(SnapshotError) as exc, source.snapshot():
            pass
        return str(exc.value)

    msg = attempt("echo 'lvcreate: Volume group \"vg0\" has insufficient free space' >&2; exit 5")
    assert "snapshot create command for" in msg
    assert "exit status 5" in msg and "insufficient free space" in msg
    assert "printed '/no/such/folder' instead of the path of a folder" in attempt(
        "echo /no/such/folder"
    )
    t0 = time.monotonic()
    assert "no answer after 0.5 s (killed)" in attempt("sleep 30 & sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize(
    ("spec", "create", "delete", "message"),
    [
        ("zfs", None, None, "unknown snapshot provider 'zfs'"),
        ("nas-dir", None, None, "nas-dir needs a pattern relative to the share"),
        ("nas-dir:../x", None, None, "nas-dir needs a pattern relative to the share"),
        ("btrfs:rel", None, None, "btrfs:DIR needs an absolute folder"),
        (
            "command",
            "make",
            None,
            "--snapshot command needs --snapshot-create CMD and --snapshot-delete CMD",
        ),
        ("btrfs", "make", "rm", "only go with --snapshot command"),
        (None, "make", None, "need --snapshot command"),
    ],
)
def test_bad_snapshot_specs_are_refused(
    spec: str | None, create: str | None, delete: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_snapshot(spec, create, delete)


@pytest.mark.parametrize("script", ["zfs-snapshot.sh", "lvm-snapshot.sh"])
def test_example_scripts_parse(script: str) -> None:
    """The documented ZFS/LVM scripts are not run here (no pool, no volume group), but
    they must at least be valid shell and follow the create/delete interface."""
    path = ROOT / "docs" / "snapshots" / script
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert "FERRYMAN_SNAPSHOT_NAME" in text and "create)" in text and "delete)" in text
    assert os.access(path, os.X_OK)


def test_btrfs_snapshot_folder_off_the_file_system_is_explained(
    btrfs_mount: Path, tmp_path: Path
) -> None:
    # the file system's top subvolume as the share: "next to it" is another file system
    provider = make_provider(str(btrfs_mount), {"provider": "btrfs"})
    source = SnapshotSource(str(btrfs_mount), provider, SnapshotScope(998, 1, str(tmp_path)))
    hint = r"not on the share's btrfs file system; name a folder"
    with pytest.raises(SnapshotError, match=hint), source.snapshot():
        pass


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_backup(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share, snaproot, state = tmp_path / "share", tmp_path / "snaps", str(tmp_path / "state")
    snaproot.mkdir()
    share.mkdir()
    (share / "a").write_text("a")
    monkeypatch.setenv("SNAPROOT", str(snaproot))
    delete = (
        'if [ "$FERRYMAN_SNAPSHOT_NAME" = ferryman-s5-t40 ]; then '
        'echo "umount: target is busy" >&2; exit 32; fi; ' + DELETE
    )
    config = {"provider": "command", "create": CREATE, "delete": delete}
    leftover = _leftover_of_a_killed_task(share, config, 5, 40, state)
    for task in (41, 42):  # the sweep fails each time, the backups go on
        source = SnapshotSource(
            str(share), make_provider(str(share), config), SnapshotScope(5, task, state)
        )
        result = run_backup(source, repo, BackupOptions(share="cmd"))
        assert result.status == "success"
        assert source.report.leftovers_removed == [] and source.report.removed
        (failure,) = source.report.leftovers_failed
        assert "exit status 32" in failure and "target is busy" in failure
    assert os.path.isdir(leftover)
