"""Browsing restore points for the server: list a folder, find the versions of a path."""

from __future__ import annotations

import os
import stat
from typing import Any

from ferryman.engine import browse
from ferryman.engine.browse import PathNotFound
from ferryman.engine.nodes import iter_dir_nodes, load_root
from ferryman.proxy import path_names

__all__ = ["PathNotFound", "list_path", "top_level_stats", "versions"]


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


def top_level_stats(repo: Any, root_tree: bytes, limit: int = 5_000_000) -> dict[str, Any]:
    """Files and bytes per top-level entry of a backed-up tree, to plan partitions."""
    root = load_root(repo, root_tree)
    top: dict[str, list[int]] = {}
    seen = 0
    for child in iter_dir_nodes(repo, root):
        files, size = 0, 0
        stack = [child]
        while stack:
            node = stack.pop()
            seen += 1
            if seen > limit:
                return {}
            if node.type == "dir":
                stack.extend(iter_dir_nodes(repo, node))
            else:
                files += 1
                size += node.size
        top[os.fsdecode(child.name)] = [files, size]
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }
