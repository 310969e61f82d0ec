"""Test helpers: store a dict of files as trees in a repository and read it back."""

from __future__ import annotations

import random
from typing import Any

from ferryman.repository import KIND_DATA, KIND_TREE, Node, Repository, RepositoryWriter
from ferryman.repository.tree import encode_tree, split_tree

Files = dict[bytes, bytes]


def make_files(seed: int, count: int = 12, shared: int = 4) -> Files:
    """Deterministic files: some shared by every seed (dedup), text-like and random ones."""
    files: Files = {}
    common = random.Random(0)
    for i in range(shared):
        files[f"common/file{i}.txt".encode()] = common.randbytes(2000) + b"shared text " * 3000
    rng = random.Random(seed)
    for i in range(count):
        kind = rng.randrange(3)
        size = rng.randrange(0, 120_000)
        if kind == 0:
            data = rng.randbytes(size)
        elif kind == 1:
            data = (f"seed {seed} line {i} ".encode() * (size // 16 + 1))[:size]
        else:
            data = b"\0" * size
        name = f"dir{rng.randrange(3)}/f{i}-".encode() + bytes([0xFF, 0xFE]) + b".bin"
        files[name] = data
    return files


def store_files(
    repo: Repository, writer: RepositoryWriter, files: Files, max_nodes: int = 4096
) -> bytes:
    """Add every file (chunked) and the directory trees; return the root tree id."""
    root: dict[bytes, Any] = {}
    for path, data in files.items():
        parts = path.split(b"/")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = data

    chunker = repo.chunker()

    def store_dir(entries: dict[bytes, Any]) -> list[bytes]:
        nodes = []
        for name in sorted(entries):
            value = entries[name]
            if isinstance(value, dict):
                nodes.append(Node(name=name, type="dir", mode=0o40755, subtrees=store_dir(value)))
            else:
                ids = []
                for chunk in chunker.cut_buf(value) if value else []:
                    bid = repo.blob_id(chunk.data)
                    writer.add_blob(KIND_DATA, bid, chunk.data)
                    ids.append(bid)
                nodes.append(
                    Node(name=name, type="file", mode=0o100644, size=len(value), content=ids)
                )
        out = []
        for tree_blob in split_tree(nodes, max_nodes=max_nodes):
            tid = repo.blob_id(tree_blob)
            writer.add_blob(KIND_TREE, tid, tree_blob)
            out.append(tid)
        return out

    top = Node(name=b"root", type="dir", mode=0o40755, subtrees=store_dir(root))
    root_blob = encode_tree([top])
    root_id = repo.blob_id(root_blob)
    writer.add_blob(KIND_TREE, root_id, root_blob)
    return root_id


def read_files(repo: Repository, root_id: bytes) -> Files:
    """Inverse of :func:`store_files`."""
    out: Files = {}

    def walk(prefix: bytes, tree_ids: list[bytes]) -> None:
        for tid in tree_ids:
            for node in repo.get_tree(tid):
                path = prefix + node.name
                if node.type == "dir":
                    walk(path + b"/", node.subtrees)
                else:
                    out[path] = b"".join(repo.get_blob(c) for c in node.content)
                    assert len(out[path]) == node.size

    (top,) = repo.get_tree(root_id)
    walk(b"", top.subtrees)
    return out
