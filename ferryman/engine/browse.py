"""Point-in-time browsing: list a restore point at a path; versions of one file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ferryman.engine.nodes import Node, iter_dir_nodes, load_root
from ferryman.engine.options import EngineError
from ferryman.engine.ports import RepositoryPort
from ferryman.repository import Repository


class PathNotFound(EngineError):
    """The path does not exist in the restore point."""


def split_path(path: bytes | str) -> list[bytes]:
    """``b"a/b/c"`` -> ``[b"a", b"b", b"c"]`` (leading/trailing/double slashes ignored)."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise PathNotFound(f"path {raw!r}: '..' is not allowed")
    return parts


def find_in_dir(repo: RepositoryPort, dir_node: Node, name: bytes) -> Node | None:
    """The entry ``name`` of a directory (streams its tree blobs; stops early)."""
    for node in iter_dir_nodes(repo, dir_node):
        if node.name == name:
            return node
        if node.name > name:
            return None
    return None


def find_node(repo: RepositoryPort, root: Node, parts: list[bytes]) -> list[Node]:
    """Nodes from the root (excluded) down to ``parts``; raises ``PathNotFound``."""
    chain: list[Node] = []
    current = root
    for i, part in enumerate(parts):
        if current.type != "dir":
            raise PathNotFound(
                f"{b'/'.join(parts[:i]).decode(errors='replace')} is not a directory"
            )
        found = find_in_dir(repo, current, part)
        if found is None:
            shown = b"/".join(parts[: i + 1]).decode(errors="replace")
            raise PathNotFound(f"{shown} does not exist in this restore point")
        chain.append(found)
        current = found
    return chain


def list_path(repo: Repository, point_id: str, path: bytes | str = b"") -> Iterator[Node]:
    """Entries of the directory at ``path`` in a restore point (a file lists itself)."""
    point = repo.load_restore_point(point_id)
    root = load_root(repo, point.root)
    chain = find_node(repo, root, split_path(path))
    target = chain[-1] if chain else root
    if target.type != "dir":
        yield target
        return
    yield from iter_dir_nodes(repo, target)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of a path: the restore point that holds it and its node."""

    point_id: str
    time: float
    node: Node
    changed: bool  # differs from the previous version listed


def versions(repo: Repository, share: str, path: bytes | str) -> list[FileVersion]:
    """Every restore point of ``share`` holding ``path``, oldest first."""
    parts = split_path(path)
    out: list[FileVersion] = []
    last: tuple[object, ...] | None = None
    for point in repo.list_restore_points():
        if point.share != share:
            continue
        try:
            chain = find_node(repo, load_root(repo, point.root), parts)
        except PathNotFound:
            continue
        node = chain[-1] if chain else load_root(repo, point.root)
        key = (node.type, node.size, node.mtime_ns, tuple(node.content), node.link_target)
        out.append(FileVersion(point.id, point.time, node, key != last))
        last = key
    return out
