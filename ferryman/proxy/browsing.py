"""Browsing restore points for the server: list a folder, find the versions of a path."""

from __future__ import annotations

import os
import stat
from typing import Any

from ferryman.engine import browse
from ferryman.engine.browse import PathNotFound
from ferryman.engine.nodes import iter_dir_nodes, load_root

__all__ = ["PathNotFound", "list_path", "top_level_stats", "versions"]


def entry(node: Any, parent: str) -> dict[str, Any]:
    name = os.fsdecode(node.name)
    kind = node.type if node.type in ("file", "dir", "symlink") else "other"
    return {
        "name": name,
        "path": "/" + "/".join(p for p in (parent.strip("/"), name) if p),
        "type": kind,
        "size": node.size,
        "mode": stat.filemode(node.mode) if node.mode else None,
        "mtime": node.mtime_ns / 1e9,
        "link_target": os.fsdecode(node.link_target) if node.link_target else None,
    }


def list_path(repo: Any, point_id: str, path: str) -> list[dict[str, Any]]:
    nodes = list(browse.list_path(repo, point_id, path))
    if (
        len(nodes) == 1
        and nodes[0].type != "dir"
        and path.strip("/").endswith(os.fsdecode(nodes[0].name))
    ):
        parent = "/".join(path.strip("/").split("/")[:-1])
        return [entry(nodes[0], parent)]
    return [entry(node, path) for node in nodes]


def versions(repo: Any, share: str, point_ids: list[str], path: str) -> list[dict[str, Any]]:
    wanted = set(point_ids)
    parent = "/".join(path.strip("/").split("/")[:-1])
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
