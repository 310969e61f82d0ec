"""Tree blobs: directory listings as msgpack-encoded, name-sorted :class:`Node` records.

This module imports nothing else from the repository so the engine (and a second
implementation's test-suite) can use it standalone.

A tree blob is the msgpack encoding of ``{"v": 1, "nodes": [node, ...]}`` with at
most :data:`MAX_NODES_PER_TREE` nodes.  A large directory's entries span several
tree blobs; its :class:`Node` lists their ids, in order, in ``subtrees``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

TREE_VERSION = 1
MAX_NODES_PER_TREE = 4096
# Start a new tree blob once the encoded nodes pass this size.
TARGET_TREE_BYTES = 1 << 20
MAX_TREE_BYTES = 16 << 20
NODE_TYPES = ("file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev")


class TreeFormatError(ValueError):
    """A tree blob is malformed (wrapped as ``CorruptObject`` by the repository)."""


@dataclass
class Node:
    """One directory entry with everything needed to restore it."""

    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    dev: int = 0
    nlink: int = 1
    size: int = 0
    content: list[bytes] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)
    link_target: bytes = b""
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    acl_access: bytes = b""
    acl_default: bytes = b""
    link_to: bytes | None = None
    subtrees: list[bytes] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# Short msgpack keys, fixed forever for format version 1 (docs/format.md).
_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("name", "n", bytes),
    ("type", "t", str),
    ("mode", "m", int),
    ("uid", "u", int),
    ("gid", "g", int),
    ("user", "U", str),
    ("group", "G", str),
    ("mtime_ns", "mt", int),
    ("atime_ns", "at", int),
    ("ctime_ns", "ct", int),
    ("inode", "i", int),
    ("dev", "d", int),
    ("nlink", "nl", int),
    ("size", "s", int),
    ("content", "c", list),
    ("holes", "h", list),
    ("link_target", "l", bytes),
    ("rdev", "r", int),
    ("xattrs", "x", dict),
    ("acl_access", "aa", bytes),
    ("acl_default", "ad", bytes),
    ("link_to", "lt", bytes),
    ("subtrees", "st", list),
    ("extra", "e", dict),
)
_DEFAULTS = Node(name=b"", type="file")


# The optional fields' keys, one getter of all their values, and their defaults: one
# C call gives a node's values (a ``getattr`` per field, twice with the default's, was
# ~1/3 of the tree saver's per-entry time on a first backup).
_OPTIONAL_KEYS = tuple(key for _, key, _ in _FIELDS[2:])
_optional_values = operator.attrgetter(*(attr for attr, _, _ in _FIELDS[2:]))
_OPTIONAL_DEFAULTS: tuple[Any, ...] = _optional_values(_DEFAULTS)


def node_to_map(node: Node) -> dict[str, Any]:
    """The msgpack map of a node; fields equal to their default are omitted."""
    out: dict[str, Any] = {"n": node.name, "t": node.type}
    for key, value, default in zip(
        _OPTIONAL_KEYS, _optional_values(node), _OPTIONAL_DEFAULTS, strict=True
    ):
        if value != default:
            out[key] = value
    holes = out.get("h")
    if holes is not None:  # stored as [offset, length] lists (same place in the map)
        out["h"] = [list(h) for h in holes]
    return out


def _check(value: Any, kind: type, what: str) -> Any:
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TreeFormatError(f"{what} must be an integer")
    if not isinstance(value, kind):
        raise TreeFormatError(f"{what} must be {kind.__name__}")
    return value


_BY_KEY: dict[str, tuple[str, type]] = {key: (attr, kind) for attr, key, kind in _FIELDS}


def node_from_map(doc: Any) -> Node:
    """Validate and build a node from its msgpack map (unknown keys are ignored)."""
    if not isinstance(doc, dict):
        raise TreeFormatError("node is not a map")
    kwargs: dict[str, Any] = {}
    # only the keys present (a node stores few); an exact type passes without _check
    for key, value in doc.items():
        spec = _BY_KEY.get(key)
        if spec is None:
            continue
        attr, kind = spec
        kwargs[attr] = value if type(value) is kind else _check(value, kind, f"node field {attr}")
    if "name" not in kwargs or "type" not in kwargs:
        raise TreeFormatError("node without name or type")
    if kwargs["type"] not in NODE_TYPES:
        raise TreeFormatError(f"unknown node type {kwargs['type']!r}")
    for attr in ("content", "subtrees"):
        for item in kwargs.get(attr, []):
            if not isinstance(item, bytes) or len(item) != 32:
                raise TreeFormatError(f"node {attr} must hold 32-byte ids")
    holes = []
    for item in kwargs.get("holes", []):
        if not (isinstance(item, list) and len(item) == 2 and all(type(v) is int for v in item)):
            raise TreeFormatError("node holes must be [offset, length] pairs")
        holes.append((item[0], item[1]))
    kwargs["holes"] = holes
    for k, v in kwargs.get("xattrs", {}).items():
        if not isinstance(k, bytes) or not isinstance(v, bytes):
            raise TreeFormatError("node xattrs must map bytes to bytes")
    if b"/" in kwargs["name"] or b"\0" in kwargs["name"] or kwargs["name"] in (b"", b".", b".."):
        raise TreeFormatError(f"invalid entry name {kwargs['name']!r}")
    return Node(**kwargs)


def encode_tree(nodes: Iterable[Node]) -> bytes:
    """Encode nodes (sorted here by name) as one tree blob."""
    ordered = sorted(nodes, key=lambda n: n.name)
    if len(ordered) > MAX_NODES_PER_TREE:
        raise ValueError(f"a tree blob holds at most {MAX_NODES_PER_TREE} nodes")
    for a, b in itertools.pairwise(ordered):
        if a.name == b.name:
            raise ValueError(f"duplicate entry name {a.name!r}")
    data: bytes = msgpack.packb(
        {"v": TREE_VERSION, "nodes": [node_to_map(n) for n in ordered]}, use_bin_type=True
    )
    if len(data) > MAX_TREE_BYTES:
        raise ValueError("tree blob exceeds 16 MiB")
    return data


def decode_tree(data: bytes) -> list[Node]:
    """Decode and validate a tree blob; raises :class:`TreeFormatError`."""
    try:
        doc = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=MAX_TREE_BYTES,
            max_str_len=MAX_TREE_BYTES,
            max_array_len=MAX_TREE_BYTES,
            max_map_len=MAX_TREE_BYTES,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise TreeFormatError(f"tree blob is not valid msgpack ({exc})") from None
    if not isinstance(doc, dict) or doc.get("v") != TREE_VERSION:
        raise TreeFormatError("unsupported tree blob version")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or len(raw_nodes) > MAX_NODES_PER_TREE:
        raise TreeFormatError("tree blob node list missing or too long")
    nodes = [node_from_map(n) for n in raw_nodes]
    for a, b in itertools.pairwise(nodes):
        if a.name >= b.name:
            raise TreeFormatError("tree blob nodes are not sorted by unique name")
    return nodes


def split_tree(
    nodes: Iterable[Node],
    max_nodes: int = MAX_NODES_PER_TREE,
    target_bytes: int = TARGET_TREE_BYTES,
) -> Iterator[bytes]:
    """Encode name-sorted ``nodes`` as a sequence of tree blobs of bounded size.

    Yields nothing for an empty directory.  The caller adds each blob and lists
    the ids, in order, in the directory node's ``subtrees``.
    """
    batch: list[Node] = []
    size = 0
    previous: bytes | None = None
    for node in nodes:
        if previous is not None and node.name <= previous:
            raise ValueError("split_tree needs nodes sorted by unique name")
        previous = node.name
        approx = len(msgpack.packb(node_to_map(node), use_bin_type=True))
        if batch and (len(batch) >= max_nodes or size + approx > target_bytes):
            yield encode_tree(batch)
            batch, size = [], 0
        batch.append(node)
        size += approx
    if batch:
        yield encode_tree(batch)
