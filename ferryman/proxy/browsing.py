"""Browsing restore points for the server: list a folder, find the versions of a path."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import msgpack

from ferryman.engine import browse
from ferryman.engine.browse import PathNotFound
from ferryman.engine.listing_cache import damaged_database
from ferryman.engine.nodes import iter_dir_nodes, load_root, load_tree_maps
from ferryman.proxy import path_names
from ferryman.repository import CorruptObject

__all__ = ["PathNotFound", "list_path", "top_level_stats", "versions"]

log = logging.getLogger(__name__)


def entry(node: Any, parent: bytes) -> dict[str, Any]:
    """One listed entry; names are bytes, shown JSON-safe (see path_names)."""
    kind = node.type if node.type in ("file", "dir", "symlink") else "other"
    raw_path = b"/" + b"/".join(p for p in (parent.strip(b"/"), node.name) if p)
    return {
        "name": path_names.display(node.name),
        "name_b64": path_names.b64(node.name),
        "path": path_names.display(raw_path),
        "type": kind,
        "size": node.size,
        "mode": stat.filemode(node.mode) if node.mode else None,
        "mtime": node.mtime_ns / 1e9,
        "link_target": path_names.display(node.link_target) if node.link_target else None,
    }


def list_path(repo: Any, point_id: str, path: bytes | str) -> list[dict[str, Any]]:
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    nodes = list(browse.list_path(repo, point_id, raw))
    if len(nodes) == 1 and nodes[0].type != "dir" and raw.strip(b"/").endswith(nodes[0].name):
        parent = b"/".join(raw.strip(b"/").split(b"/")[:-1])
        return [entry(nodes[0], parent)]
    return [entry(node, raw) for node in nodes]


def versions(
    repo: Any, share: str, point_ids: list[str], path: bytes | str
) -> list[dict[str, Any]]:
    wanted = set(point_ids)
    path = path if isinstance(path, bytes) else os.fsencode(path)
    parent = b"/".join(path.strip(b"/").split(b"/")[:-1])
    found = []
    for version in browse.versions(repo, share, path):
        if version.point_id not in wanted:
            continue
        item = entry(version.node, parent)
        found.append(
            {
                "point_id": version.point_id,
                "type": item["type"],
                "size": item["size"],
                "mtime": item["mtime"],
                "changed": version.changed,
            }
        )
    return found


# Recursive totals per tree blob id, kept in the repository's local cache directory:
# a tree blob id names its content (every entry, sizes and subtree ids), so its totals
# never change and a row is never stale. Only a cache: a missing or unreadable file
# costs one walk of the trees.
TREE_STATS_FILE = "tree_stats.sqlite"
TREE_STATS_MAX_BYTES = 64 << 20  # started again past this (rows of collected trees stay)
_QUERY_IDS = 500  # ids per query (below SQLite's bound parameter limit)
TREE_STATS_BUSY_S = 5.0  # wait for another task's write; then this task does without

Totals = tuple[int, int, int]  # files (every non-directory), bytes, entries


class _TooLarge(Exception):
    pass


class TreeStatsCache:
    """``Totals`` of tree blobs by id, in SQLite; every failure reads as a miss."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        for attempt in range(2):
            conn = None
            try:
                if attempt or (path.exists() and path.stat().st_size > TREE_STATS_MAX_BYTES):
                    path.unlink(missing_ok=True)  # too large, or damaged: start again
                conn = sqlite3.connect(path, timeout=TREE_STATS_BUSY_S, check_same_thread=False)
                conn.execute("PRAGMA synchronous=OFF")  # a cache: a lost write is a miss
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS totals (id BLOB PRIMARY KEY, files INTEGER,"
                    " bytes INTEGER, entries INTEGER) WITHOUT ROWID"
                )
                self._conn = conn
                return
            except (OSError, sqlite3.Error) as exc:
                if conn is not None:
                    conn.close()
                log.warning("tree stats cache %s unusable: %s", path, exc)
                if not damaged_database(exc):
                    return  # busy (another task), read-only or full: kept, not used

    def get_many(self, ids: list[bytes]) -> dict[bytes, Totals]:
        found: dict[bytes, Totals] = {}
        if self._conn is None:
            return found
        try:
            for start in range(0, len(ids), _QUERY_IDS):
                part = ids[start : start + _QUERY_IDS]
                marks = ",".join("?" * len(part))
                for row in self._conn.execute(
                    f"SELECT id, files, bytes, entries FROM totals WHERE id IN ({marks})", part
                ):
                    if all(isinstance(v, int) and v >= 0 for v in row[1:]):
                        found[bytes(row[0])] = (row[1], row[2], row[3])
        except sqlite3.Error as exc:
            log.warning("tree stats cache %s unreadable, walking the trees: %s", self._path, exc)
            self.close()
            if damaged_database(exc):
                self._path.unlink(missing_ok=True)  # the next task starts it again
        return found

    def put_many(self, rows: dict[bytes, Totals]) -> None:
        if self._conn is None or not rows:
            return
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO totals VALUES (?, ?, ?, ?)",
                    [(k, *v) for k, v in rows.items()],
                )
        except sqlite3.Error as exc:
            log.warning("tree stats cache not written: %s", exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _blob_totals(
    repo: Any,
    blob_ids: list[bytes],
    known: dict[bytes, Totals],
    cache: TreeStatsCache | None,
    new: dict[bytes, Totals],
    budget: list[int],
) -> Totals:
    """Sum of the totals of ``blob_ids`` (one directory's tree blobs), decoding only the
    tree blobs neither ``known`` nor ``cache`` has; post-order without recursion."""
    result = [0, 0, 0]
    # one frame per tree blob being summed: [its id, blob ids still to add, its sums]
    frames: list[list[Any]] = [[None, list(reversed(blob_ids)), result]]
    _ask(known, cache, blob_ids)
    while frames:
        blob_id, todo, sums = frames[-1]
        if todo:
            child = todo.pop()
            hit = known.get(child)
            if hit is not None:
                for i in range(3):
                    sums[i] += hit[i]
                continue
            own = [0, 0, 0]
            subtrees: list[bytes] = []
            # the stored maps, without building a validated Node per entry (half the
            # decoding time); only the three fields summed are read, and checked
            try:
                maps = load_tree_maps(repo, child)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:  # as get_tree says
                raise CorruptObject(f"tree blob {child.hex()}: {exc}") from None
            for m in maps:
                if type(m) is not dict:
                    raise CorruptObject(f"tree blob {child.hex()}: node is not a map")
                own[2] += 1
                if m.get("t") == "dir":
                    ids = m.get("st", [])
                    if not isinstance(ids, list) or not all(
                        isinstance(i, bytes) and len(i) == 32 for i in ids
                    ):
                        raise CorruptObject(f"tree blob {child.hex()}: bad subtree ids")
                    subtrees.extend(ids)
                else:
                    size = m.get("s", 0)
                    if type(size) is not int or size < 0:
                        raise CorruptObject(f"tree blob {child.hex()}: bad size")
                    own[0] += 1
                    own[1] += size
            budget[0] -= own[2]
            if budget[0] < 0:
                raise _TooLarge
            _ask(known, cache, subtrees)
            frames.append([child, list(reversed(subtrees)), own])
            continue
        frames.pop()
        if blob_id is not None:
            totals = (sums[0], sums[1], sums[2])
            known[blob_id] = new[blob_id] = totals
            parent = frames[-1][2]
            for i in range(3):
                parent[i] += totals[i]
    return (result[0], result[1], result[2])


def _ask(known: dict[bytes, Totals], cache: TreeStatsCache | None, ids: list[bytes]) -> None:
    missing = [i for i in ids if i not in known]
    if cache is not None and missing:
        known.update(cache.get_many(missing))


def top_level_stats(repo: Any, root_tree: bytes, limit: int = 5_000_000) -> dict[str, Any]:
    """Files and bytes per top-level entry of a backed-up tree, to plan partitions.

    Each tree blob's recursive totals are kept in ``TREE_STATS_FILE`` of the
    repository's cache directory, so after a change only the tree blobs that are
    new since the last computation are decoded (an unchanged subtree is one
    lookup). More than ``limit`` entries: ``{}``.
    """
    root = load_root(repo, root_tree)
    cache_path = getattr(repo, "cache_path", None)
    cache = TreeStatsCache(Path(cache_path) / TREE_STATS_FILE) if cache_path else None
    known: dict[bytes, Totals] = {}
    new: dict[bytes, Totals] = {}
    budget = [limit]
    top: dict[str, list[int]] = {}
    try:
        entries = 0
        for child in iter_dir_nodes(repo, root):
            entries += 1
            if child.type == "dir":
                files, size, below = _blob_totals(repo, child.subtrees, known, cache, new, budget)
                entries += below
            else:
                files, size = 1, child.size
            if entries > limit:
                return {}
            top[os.fsdecode(child.name)] = [files, size]
    except _TooLarge:
        return {}
    finally:
        if cache is not None:
            cache.put_many(new)
            cache.close()
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }
