"""Change detection on re-runs: what is read again, what is reused, which trees stay."""

from __future__ import annotations

import os
from pathlib import Path

from ferryman.engine.backup import run_backup
from ferryman.engine.nodes import Node, load_root
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource

from .trees import diff_trees


def _backup(repo: Repository, src: Path) -> BackupResult:
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.status == "success", result.warnings
    assert result.restore_point is not None
    return result


def _dirs(repo: Repository, result: BackupResult) -> dict[str, Node]:
    """Every directory node of a restore point by path ("" for the root)."""
    assert result.restore_point is not None
    root = load_root(repo, repo.load_restore_point(result.restore_point).root)
    found: dict[str, Node] = {"": root}
    stack = [("", root)]
    while stack:
        path, node = stack.pop()
        for blob_id in node.subtrees:
            for child in repo.get_tree(blob_id):
                if child.type == "dir":
                    sub = f"{path}/{child.name.decode()}" if path else child.name.decode()
                    found[sub] = child
                    stack.append((sub, child))
    return found


def _files(repo: Repository, result: BackupResult, folder: str) -> dict[bytes, Node]:
    node = _dirs(repo, result)[folder]
    return {n.name: n for blob_id in node.subtrees for n in repo.get_tree(blob_id)}


def _build(src: Path) -> None:
    deep = src / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (src / "side").mkdir()
    for i in range(30):
        (deep / f"f{i:02}").write_bytes(os.urandom(100 + i))
        (src / "side" / f"g{i:02}").write_bytes(os.urandom(200 + i))
        (src / "a" / f"h{i:02}").write_bytes(os.urandom(300 + i))
    (src / "side" / "link").symlink_to("g00")
    (src / "a" / "link").symlink_to("b/c/f00")
    os.link(src / "side" / "g05", src / "a" / "hard")
    (src / "a" / "b" / "empty").write_bytes(b"")


def test_unchanged_subtrees_keep_their_tree_ids_and_a_deep_change_does_not(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _build(src)
    _backup(repo, src)
    # the first re-run may store new records of directories whose atime the first
    # backup moved (directories holding a hard link are not reused); then none
    settled = _backup(repo, src)
    again = _backup(repo, src)
    assert again.stats.files_read == 0 and again.stats.trees_written == 0
    assert again.root_tree == settled.root_tree
    before = _dirs(repo, again)
    with open(src / "a" / "b" / "c" / "f17", "ab") as f:
        f.write(b"changed")
    third = _backup(repo, src)
    assert third.stats.files_read == 1
    after = _dirs(repo, third)
    assert after["side"].subtrees == before["side"].subtrees  # the unchanged sibling
    for changed in ("", "a", "a/b", "a/b/c"):  # the file's directory and its ancestors
        assert after[changed].subtrees != before[changed].subtrees, changed
    # the unchanged neighbours of the changed file keep their stored records exactly
    old, new = _files(repo, again, "a/b/c"), _files(repo, third, "a/b/c")
    assert set(old) == set(new)
    assert [n for n in old if old[n] != new[n]] == [b"f17"]
    assert third.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, third.restore_point, out)
    assert diff_trees(src, out) == []


def test_daily_change_stores_exactly_the_changed_files(repo: Repository, tmp_path: Path) -> None:
    """Appended, added, replaced (same size and mtime, another inode), chmod-ed back
    (ctime only) and renamed-directory files are read; nothing else is."""
    src = tmp_path / "src"
    _build(src)
    (src / "old-name").mkdir()
    for i in range(5):
        (src / "old-name" / f"m{i}").write_bytes(os.urandom(50))
    _backup(repo, src)
    c, side, a = src / "a" / "b" / "c", src / "side", src / "a"
    with open(c / "f03", "ab") as f:
        f.write(b"appended")  # size and mtime
    (c / "f04").unlink()
    (c / "f04b").write_bytes(b"added between two unchanged files")
    (side / "new").write_bytes(b"added at the end")
    stat = os.stat(side / "g10")
    (side / "g10.tmp").write_bytes(os.urandom(stat.st_size))  # same size...
    os.utime(side / "g10.tmp", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...same mtime
    os.replace(side / "g10.tmp", side / "g10")  # another inode
    os.chmod(a / "h07", os.stat(a / "h07").st_mode)  # only its ctime moves
    (side / "link").unlink()
    (side / "link").symlink_to("g01")  # a symlink made again
    os.rename(src / "old-name", src / "new-name")  # its 5 files under another name
    third = _backup(repo, src)
    # f03, f04b, new, g10, h07, and the 5 files of the renamed folder
    assert third.stats.files_read == 10
    # the rest is reused, except the 2 symlinks and the hard link's second name
    assert third.stats.files_unchanged == third.stats.files_scanned - 10 - 2 - 1
    assert third.restore_point is not None
    out = tmp_path / "out"
    run_restore(repo, third.restore_point, out)
    assert diff_trees(src, out) == []
    assert os.readlink(out / "side" / "link") == "g01"
    assert os.stat(out / "a" / "hard").st_ino == os.stat(out / "side" / "g05").st_ino


def test_large_directory_keeps_its_blob_boundaries_on_re_runs(
    repo: Repository, tmp_path: Path
) -> None:
    """Unchanged entries batched across several runs and tree blobs: an unchanged
    re-run reuses the directory's blobs; a change after the first blob's 4,096
    entries leaves that blob's id as it was and stores only what follows."""
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(5000):
        (big / f"e{i:05}").touch()
    _backup(repo, src)
    settled = _backup(repo, src)
    again = _backup(repo, src)
    assert again.stats.trees_written == 0 and again.stats.files_unchanged == 5000
    before = _dirs(repo, settled)["big"].subtrees
    assert len(before) == 2 and _dirs(repo, again)["big"].subtrees == before
    (big / "e04500").write_bytes(b"now with content")
    changed = _backup(repo, src)
    assert changed.stats.files_read == 1
    after = _dirs(repo, changed)["big"].subtrees
    assert after[0] == before[0] and after[1] != before[1]
