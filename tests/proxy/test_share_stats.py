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

import msgpack
import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.nodes import (
    MAX_NODES_PER_TREE,
    iter_dir_nodes,
    load_root,
    load_tree_maps,
    store_maps,
)
from ferryman.engine.options import BackupOptions
from ferryman.proxy import browsing
from ferryman.proxy.browsing import TREE_STATS_FILE, top_level_stats
from ferryman.repository import CorruptObject, Repository, open_backend
from ferryman.repository.blob import KIND_TREE
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
    tmp_path: Path, share: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes] = []

    def counting(r: Repository, blob_id: bytes) -> list[dict[str, object]]:
        decoded.append(blob_id)
        return load_tree_maps(r, blob_id)

    monkeypatch.setattr(browsing, "load_tree_maps", counting)
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
        a = next(n for n in iter_dir_nodes(again, load_root(again, root)) if n.name == b"a")
        z = next(n for n in iter_dir_nodes(again, a) if n.name == b"z")
        decoded.clear()
        assert top_level_stats(again, root) == _expected(share)
        assert decoded  # the changed directories' new tree blobs
        assert not set(z.subtrees) & set(decoded)  # a/z is unchanged: its totals cached
        decoded.clear()
        assert top_level_stats(again, root) == _expected(share)  # every total from the cache
        assert decoded == []
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


@pytest.mark.parametrize(
    ("node", "error"),
    [(7, "node is not a map"), ({"n": b"d", "t": "dir", "st": [b"short"]}, "bad subtree ids")],
)
def test_a_tree_blob_with_a_bad_node_is_a_clear_error(
    repo: Repository, node: object, error: str
) -> None:
    with repo.open_writer("t") as w:
        bad = repo.blob_id(msgpack.packb({"v": 1, "nodes": [node]}, use_bin_type=True))
        w.add_blob(KIND_TREE, bad, msgpack.packb({"v": 1, "nodes": [node]}, use_bin_type=True))
        top, _ = store_maps(repo, w, [{"n": b"a", "t": "dir", "st": [bad]}])
        root, _ = store_maps(repo, w, [{"n": b"share", "t": "dir", "st": [top]}])
    with pytest.raises(CorruptObject, match=error):
        top_level_stats(repo, root)


def _full_walk(repo: Repository, root_tree: bytes, limit: int = 5_000_000) -> dict[str, object]:
    """The figures of the walk over validated ``Node``s that the cache replaced."""
    top: dict[str, list[int]] = {}
    seen = 0
    for child in iter_dir_nodes(repo, load_root(repo, root_tree)):
        files, size, stack = 0, 0, [child]
        while stack:
            node = stack.pop()
            seen += 1
            if seen > limit:
                return {}
            if node.type == "dir":
                stack.extend(iter_dir_nodes(repo, node))
            else:
                files, size = files + 1, size + node.size
        top[os.fsdecode(child.name)] = [files, size]
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }


def test_special_entries_and_multi_blob_directories_give_the_full_walks_figures(
    tmp_path: Path, share: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.link(share / "b/one", share / "b/hard")
    os.link(share / "top.txt", share / "top-hard")
    os.symlink("one", share / "b/link")
    os.symlink("a", share / "toplink")
    os.mkfifo(share / "b/pipe")
    with open(share / "a/sparse", "wb") as f:
        f.truncate(5 << 20)
        f.write(b"data")
    many = share / "many"
    many.mkdir()
    for i in range(MAX_NODES_PER_TREE + 5):  # one directory spread over two tree blobs
        (many / f"e{i:05}").write_bytes(b"m" * (i % 3))
    root = _backup(repo, share)
    assert len(load_root(repo, root).subtrees) == 1
    many_node = next(n for n in iter_dir_nodes(repo, load_root(repo, root)) if n.name == b"many")
    assert len(many_node.subtrees) > 1
    decoded: list[bytes] = []

    def counting(r: object, blob_id: bytes) -> list[dict[str, object]]:
        decoded.append(blob_id)
        return load_tree_maps(repo, blob_id)

    monkeypatch.setattr(browsing, "load_tree_maps", counting)
    total = sum(len(d) + len(f) for _, d, f in os.walk(share))  # every entry below the root
    assert _full_walk(repo, root, total - 1) == {}
    assert top_level_stats(repo, root, limit=total - 1) == {}  # cold cache
    assert top_level_stats(repo, root) == _full_walk(repo, root) != {}
    assert decoded  # computed from the tree blobs
    for limit in (5, MAX_NODES_PER_TREE, total - 1, total):
        assert top_level_stats(repo, root, limit=limit) == _full_walk(repo, root, limit)
    assert top_level_stats(repo, root, limit=total) != {}
    decoded.clear()
    assert top_level_stats(repo, root) == _full_walk(repo, root)
    assert decoded == []  # every subtree's totals from the cache, no tree blob decoded


def test_a_cache_locked_by_another_task_is_kept_and_costs_only_a_walk(
    share: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _backup(repo, share)
    assert top_level_stats(repo, root) == _expected(share)
    path = repo.cache_path / TREE_STATS_FILE
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT count(*) FROM totals").fetchone()[0]
    assert rows > 0
    inode = path.stat().st_ino
    monkeypatch.setattr(browsing, "TREE_STATS_BUSY_S", 0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another task writing, longer than the wait
        assert top_level_stats(repo, root) == _expected(share)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert path.stat().st_ino == inode  # not taken for a damaged file and started again
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM totals").fetchone()[0] == rows


def test_a_cache_grown_past_its_bound_is_started_again(
    share: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _backup(repo, share)
    top_level_stats(repo, root)
    path = repo.cache_path / TREE_STATS_FILE
    with sqlite3.connect(path) as conn:  # a row of a tree blob no longer in any backup
        conn.execute("INSERT INTO totals VALUES (?, 1, 2, 3)", (b"gone" * 8,))
    monkeypatch.setattr(browsing, "TREE_STATS_MAX_BYTES", 1)  # scaled down
    assert top_level_stats(repo, root) == _expected(share)
    with sqlite3.connect(path) as conn:
        ids = {bytes(r[0]) for r in conn.execute("SELECT id FROM totals")}
    assert ids and b"gone" * 8 not in ids  # only this computation's rows
