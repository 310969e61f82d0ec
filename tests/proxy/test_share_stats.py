"""Per-top-level share statistics (the partition planner's input) from a real backup.

The totals of each tree blob are cached in the repository's cache directory, so a
backup after a change decodes only the new tree blobs; the figures must still be
exactly the share's, also when the cache is unreadable or the share too large.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.nodes import store_maps
from ferryman.engine.options import BackupOptions
from ferryman.proxy.browsing import TREE_STATS_FILE, top_level_stats
from ferryman.repository import CorruptObject, Repository, open_backend
from ferryman.sources.local import LocalSource


def _open(tmp_path: Path) -> Repository:
    backend = open_backend(str(tmp_path / "repo"))
    if not (tmp_path / "repo").exists():
        Repository.init(backend, "pw", scrypt_n=1 << 10, cache_dir=tmp_path / "cache").close()
    return Repository.open(backend, "pw", cache_dir=tmp_path / "cache")


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    for d in ("a/x/y", "a/z", "b", "empty"):
        (root / d).mkdir(parents=True)
    for i in range(30):
        (root / "a/x/y" / f"f{i}").write_bytes(b"y" * (i * 7))
        (root / "a/z" / f"g{i}").write_bytes(b"z" * i)
    (root / "b/one").write_bytes(b"b" * 1000)
    (root / "top.txt").write_bytes(b"t" * 5)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = _open(tmp_path)
    yield r
    r.close()


def _expected(root: Path) -> dict[str, object]:
    top: dict[str, list[int]] = {}
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            sizes = [
                os.lstat(os.path.join(d, f)).st_size
                for d, _, names in os.walk(entry.path)
                for f in names
            ]
            top[entry.name] = [len(sizes), sum(sizes)]
        else:
            top[entry.name] = [1, entry.stat(follow_symlinks=False).st_size]
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }


def _backup(repo: Repository, share: Path) -> bytes:
    return run_backup(LocalSource(share), repo, BackupOptions(share="s")).root_tree


def test_stats_match_the_share_before_and_after_a_change(
    tmp_path: Path, share: Path, repo: Repository
) -> None:
    assert top_level_stats(repo, _backup(repo, share)) == _expected(share)
    assert (repo.cache_path / TREE_STATS_FILE).exists()
    (share / "a/x/y/f3").write_bytes(b"longer now" * 100)
    (share / "a/x/y/f4").unlink()
    (share / "b/two").write_bytes(b"2" * 333)
    (share / "empty/new").mkdir()
    (share / "empty/new/file").write_bytes(b"n" * 12)
    root = _backup(repo, share)
    repo.close()
    again = _open(tmp_path)  # a fresh Repository, as the proxy opens one per task
    try:
        assert top_level_stats(again, root) == _expected(share)
        assert top_level_stats(again, root) == _expected(share)  # every total from the cache
    finally:
        again.close()


def test_an_unreadable_cache_costs_a_walk_not_the_figures(share: Path, repo: Repository) -> None:
    root = _backup(repo, share)
    top_level_stats(repo, root)
    (repo.cache_path / TREE_STATS_FILE).write_bytes(b"not a database" * 100)
    assert top_level_stats(repo, root) == _expected(share)
    # started again: a valid cache that gives the same figures
    with sqlite3.connect(repo.cache_path / TREE_STATS_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM totals").fetchone()[0] > 0
    assert top_level_stats(repo, root) == _expected(share)


def test_a_share_above_the_limit_gets_no_stats_also_from_the_cache(
    share: Path, repo: Repository
) -> None:
    root = _backup(repo, share)
    assert top_level_stats(repo, root, limit=10) == {}
    assert top_level_stats(repo, root)["files"] == _expected(share)["files"]
    assert top_level_stats(repo, root, limit=10) == {}  # cached totals count too


def test_a_tree_blob_with_a_bad_size_is_a_clear_error(repo: Repository) -> None:
    with repo.open_writer("t") as w:
        bad, _ = store_maps(repo, w, [{"n": b"f", "t": "file", "s": "12"}])
        top, _ = store_maps(repo, w, [{"n": b"a", "t": "dir", "st": [bad]}])
        root, _ = store_maps(repo, w, [{"n": b"share", "t": "dir", "st": [top]}])
    with pytest.raises(CorruptObject, match="bad size"):
        top_level_stats(repo, root)
