"""Assemble partition results (disjoint subtrees of one share) into one restore point.

Each partition's root tree covers its subtrees plus the directories leading to
them. Directories present in several partitions are merged entry by entry
(a streaming merge of their sorted tree blobs); everything present in only
one partition is referenced as is, so assembling writes only the few tree blobs
along the merged directories.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Any

from ferryman.engine.nodes import MAX_NODES_PER_TREE, Node, iter_dir_nodes, load_root, store_root
from ferryman.engine.nodes import store_tree as _store_tree
from ferryman.engine.options import BackupResult, EngineError
from ferryman.repository import Repository, RepositoryWriter


class AssembleError(EngineError):
    """Partition results that cannot be combined (overlap, missing trees)."""


def _merge_dirs(repo: Repository, writer: RepositoryWriter, dirs: list[Node]) -> Node:
    """A directory node holding the union of the entries of ``dirs``."""
    base = dirs[0]
    if len(dirs) == 1:
        return base
    streams = [iter_dir_nodes(repo, d) for d in dirs]
    merged: Iterator[Node] = heapq.merge(*streams, key=lambda n: n.name)
    ids: list[bytes] = []
    buffer: list[Node] = []
    for name, group in groupby(merged, key=lambda n: n.name):
        same = list(group)
        if len(same) == 1:
            node = same[0]
        elif all(n.type == "dir" for n in same):
            node = _merge_dirs(repo, writer, same)
        else:
            shown = name.decode(errors="replace")
            raise AssembleError(f"entry {shown!r} is covered by more than one partition")
        buffer.append(node)
        if len(buffer) >= MAX_NODES_PER_TREE // 4:
            ids.append(_store_tree(repo, writer, buffer))
            buffer = []
    if buffer or not ids:
        ids.append(_store_tree(repo, writer, buffer))
    newest = max(dirs, key=lambda d: d.mtime_ns)
    node = Node(**{**base.__dict__, "subtrees": ids})
    node.mtime_ns = newest.mtime_ns
    return node


def assemble_restore_point(
    repo: Repository,
    share: str,
    partition_results: Sequence[BackupResult],
    meta: dict[str, Any] | None = None,
) -> str:
    """Combine partition results into one restore point; returns its id.

    ``meta`` may carry ``job``, ``session``, ``hostname``, ``proxy``, ``parent``
    and ``extra`` for the restore point manifest.
    """
    if not partition_results:
        raise AssembleError("no partition results to assemble")
    meta = dict(meta or {})
    roots = [load_root(repo, r.root_tree) for r in partition_results]
    stats: dict[str, Any] = {}
    for r in partition_results:
        for k, v in r.stats.as_dict().items():
            stats[k] = stats.get(k, 0) + v
    with repo.open_writer(f"assemble:{share}") as writer:
        for root in roots:
            for blob_id in root.subtrees:
                if not writer.has_blob(blob_id):
                    raise AssembleError(f"partition tree {blob_id.hex()[:16]} is missing")
        root = _merge_dirs(repo, writer, roots)
        root_id = store_root(repo, writer, root)
        point = writer.save_restore_point(
            share=share,
            root=root_id,
            job=str(meta.get("job", "")),
            session=str(meta.get("session", "")),
            hostname=str(meta.get("hostname", "")),
            proxy=str(meta.get("proxy", "")),
            parent=meta.get("parent") or partition_results[0].parent,
            partitions=[
                {
                    "partition": r.partition,
                    "paths": list(r.paths),
                    "root": r.root_tree,
                    "status": r.status,
                    "warnings": len(r.warnings) + r.warnings_dropped,
                }
                for r in partition_results
            ],
            stats=stats,
            extra=dict(meta.get("extra", {})),
        )
    return point.id
