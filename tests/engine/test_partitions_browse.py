"""Partitions assembled into one restore point; browsing; include/exclude masks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferryman.engine.assemble import AssembleError, assemble_restore_point
from ferryman.engine.backup import run_backup
from ferryman.engine.browse import PathNotFound, list_path, versions
from ferryman.engine.options import BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource

from .trees import diff_trees


def _share(src: Path) -> None:
    for rel in ["a/x", "a/y", "b/c/z", "b/d/w", "top"]:
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode() * 100)


def test_partitions_assemble_to_the_whole_share(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _share(src)
    parts = [[b"a"], [b"b/c", b"top"], [b"b/d"]]
    results = [
        run_backup(
            LocalSource(src),
            repo,
            BackupOptions(share="s", paths=p, partition=f"p{i}", save_restore_point=False),
        )
        for i, p in enumerate(parts)
    ]
    assert all(r.restore_point is None for r in results)
    point = assemble_restore_point(repo, "s", results, {"session": "sess-1"})
    run_restore(repo, point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []
    loaded = repo.load_restore_point(point)
    assert loaded.session == "sess-1" and len(loaded.partitions) == 3
    # the next partition run finds the assembled point as parent: nothing re-read
    again = run_backup(
        LocalSource(src),
        repo,
        BackupOptions(share="s", paths=[b"b/d"], partition="p2", save_restore_point=False),
    )
    assert again.parent == point and again.stats.files_read == 0


def test_overlapping_partitions_are_refused(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _share(src)
    one = run_backup(
        LocalSource(src), repo, BackupOptions(share="s", paths=[b"a"], save_restore_point=False)
    )
    with pytest.raises(AssembleError, match="more than one partition"):
        assemble_restore_point(repo, "s", [one, one], {})


def test_missing_partition_path_is_a_warning(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _share(src)
    r = run_backup(LocalSource(src), repo, BackupOptions(share="s", paths=[b"a", b"ghost/x"]))
    assert r.status == "warning"
    assert r.warnings[0].path == "ghost"


def test_browse_and_versions(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _share(src)
    first = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert first.restore_point is not None
    assert [n.name for n in list_path(repo, first.restore_point)] == [b"a", b"b", b"top"]
    assert [n.name for n in list_path(repo, first.restore_point, "b/c")] == [b"z"]
    with pytest.raises(PathNotFound):
        list(list_path(repo, first.restore_point, "b/nope"))
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))  # unchanged
    (src / "a" / "x").write_bytes(b"changed")
    run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    found = versions(repo, "s", "a/x")
    assert len(found) == 3
    assert [v.changed for v in found] == [True, False, True]
    assert found[-1].node.size == len(b"changed")


def test_include_exclude_and_symlinked_root(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _share(src)
    (src / "a" / "skip.tmp").write_bytes(b"tmp")
    (src / "cache").mkdir()
    (src / "cache" / "big").write_bytes(b"cached")
    os.symlink(src, tmp_path / "via-link")
    r = run_backup(
        LocalSource(tmp_path / "via-link"),
        repo,
        BackupOptions(share="s", exclude=["*.tmp", "cache"], include=[]),
    )
    assert r.restore_point is not None
    names = [n.name for n in list_path(repo, r.restore_point)]
    assert b"cache" not in names
    assert [n.name for n in list_path(repo, r.restore_point, "a")] == [b"x", b"y"]
    only = run_backup(LocalSource(src), repo, BackupOptions(share="t", include=["b/*/z"]))
    assert only.stats.files_read == 1


def test_one_file_system_keeps_mount_point_only(repo: Repository, tmp_path: Path) -> None:
    import subprocess

    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "local").write_bytes(b"here")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "mnt")], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        (src / "mnt" / "elsewhere").write_bytes(b"other fs")
        r = run_backup(LocalSource(src), repo, BackupOptions(share="s", one_file_system=True))
        assert r.restore_point is not None
        assert [n.name for n in list_path(repo, r.restore_point, "mnt")] == []
        full = run_backup(LocalSource(src), repo, BackupOptions(share="s2"))
        assert full.restore_point is not None
        assert [n.name for n in list_path(repo, full.restore_point, "mnt")] == [b"elsewhere"]
    finally:
        subprocess.run(["umount", "-l", str(src / "mnt")], check=False)
