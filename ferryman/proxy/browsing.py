"""Browsing restore points for the server: list a folder, find the versions of a path."""

from __future__ import annotations

import os
import stat
from typing import Any

from ferryman.engine.nodes import iter_dir_nodes, load_root


class PathNotFound(Exception):
    pass


def _components(path: str) -> list[bytes]:
    return [os.fsencode(p) for p in path.strip("/").split("/") if p and p != "."]


def find_node(repo: Any, root_tree: bytes, path: str) -> Any:
    node = load_root(repo, root_tree)
    for name in _components(path):
        if node.type != "dir":
            raise PathNotFound(f"{path}: not a folder")
        for child in iter_dir_nodes(repo, node):
            if child.name == name:
                node = child
                break
        else:
            raise PathNotFound(f"{path}: not in this restore point")
    return node


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
    point = repo.load_restore_point(point_id)
    node = find_node(repo, point.root, path)
    if node.type != "dir":
        parent = "/".join(path.strip("/").split("/")[:-1])
        return [entry(node, parent)]
    return [entry(child, path) for child in iter_dir_nodes(repo, node)]


def versions(repo: Any, point_ids: list[str], path: str) -> list[dict[str, Any]]:
    found = []
    parent = "/".join(path.strip("/").split("/")[:-1])
    for point_id in point_ids:
        try:
            point = repo.load_restore_point(point_id)
            node = find_node(repo, point.root, path)
        except PathNotFound:
            continue
        item = entry(node, parent)
        found.append(
            {
                "point_id": point_id,
                "type": item["type"],
                "size": item["size"],
                "mtime": item["mtime"],
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
