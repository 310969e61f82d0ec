"""Building ``Node``s from stat results, and storing/streaming tree blobs.

The root tree of a restore point (or of a partition result) is a tree blob
holding exactly one directory node named ``ROOT_NAME``: the share root, with
its own metadata and the ids of the tree blobs of its entries. A directory of
any size (even the share root with a million entries) is thereby reachable
from one 32-byte id.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import msgspec

from ferryman.engine.options import EngineError
from ferryman.engine.ports import RepositoryPort, WriterPort
from ferryman.repository.blob import KIND_TREE
from ferryman.repository.tree import (
    MAX_NODES_PER_TREE,
    MAX_TREE_BYTES,
    TREE_VERSION,
    Node,
    encode_tree,
    node_from_map,
    node_to_map,
)
from ferryman.sources.metadata import group_name, user_name

__all__ = [
    "MAX_NODES_PER_TREE",
    "ROOT_NAME",
    "Node",
    "NodeMap",
    "decode_tree_maps",
    "encode_record",
    "iter_dir_maps",
    "iter_dir_nodes",
    "load_dir_maps",
    "load_root",
    "load_tree_maps",
    "node_from_map",
    "node_from_stat",
    "node_to_map",
    "node_type",
    "store_maps",
    "store_root",
    "store_tree",
    "tree_blob",
    "tree_keys",
    "tree_records",
]

ROOT_NAME = b"root"

# A node in its stored msgpack form (short keys of docs/format.md, tree version 1).
# Change detection compares and reuses these directly: decoding into ``Node``
# objects and re-encoding unchanged entries would dominate an unchanged re-run.
NodeMap = dict[str, Any]


class TreeLayoutError(EngineError):
    """A root tree does not have the expected single-root-directory layout."""


def node_type(mode: int) -> str:
    """The Node type for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "chardev"
    return "blockdev"


def node_from_stat(name: bytes, st: os.stat_result) -> Node:
    """A Node with the metadata of ``st`` (content, xattrs and link target filled later)."""
    return Node(
        name=name,
        type=node_type(st.st_mode),
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        rdev=st.st_rdev,
    )


def store_tree(repo: RepositoryPort, writer: WriterPort, nodes: list[Node]) -> bytes:
    """Encode and add one tree blob (nodes already sorted); return its id."""
    data = encode_tree(nodes)
    blob_id = repo.blob_id(data)
    writer.add_blob(KIND_TREE, blob_id, data)
    return blob_id


def store_root(repo: RepositoryPort, writer: WriterPort, root: Node) -> bytes:
    """Store the single-node root tree blob for a share root directory node."""
    root.name = ROOT_NAME
    return store_tree(repo, writer, [root])


def load_tree(repo: RepositoryPort, blob_id: bytes) -> list[Node]:
    """Fetch and decode one tree blob."""
    return repo.get_tree(blob_id)


def load_root(repo: RepositoryPort, root_tree: bytes) -> Node:
    """The share root directory node of a root tree."""
    nodes = load_tree(repo, root_tree)
    if len(nodes) != 1 or nodes[0].type != "dir":
        raise TreeLayoutError(
            f"root tree {root_tree.hex()[:16]} does not hold a single root directory"
        )
    return nodes[0]


def iter_dir_nodes(repo: RepositoryPort, dir_node: Node) -> Iterator[Node]:
    """Stream a directory's entries in name order, one tree blob at a time."""
    for blob_id in dir_node.subtrees:
        yield from load_tree(repo, blob_id)


def load_tree_maps(repo: RepositoryPort, blob_id: bytes) -> list[NodeMap]:
    """A tree blob's nodes as stored maps, unvalidated: for change detection and the
    share statistics (``proxy.browsing``), which check the few fields they read; restore
    and browsing a restore point use the validating ``repo.get_tree``."""
    return decode_tree_maps(repo.get_blob(blob_id), blob_id)


def decode_tree_maps(data: bytes, blob_id: bytes) -> list[NodeMap]:
    """``load_tree_maps`` of the tree blob ``blob_id`` whose bytes are ``data``."""
    doc = msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        max_bin_len=MAX_TREE_BYTES,
        max_str_len=MAX_TREE_BYTES,
        ext_hook=msgspec.msgpack.Ext,  # kept as msgspec encodes it back (``encode_record``)
    )
    if not isinstance(doc, dict) or doc.get("v") != TREE_VERSION:
        raise TreeLayoutError(f"tree blob {blob_id.hex()[:16]}: unsupported version")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise TreeLayoutError(f"tree blob {blob_id.hex()[:16]}: no node list")
    return nodes


def load_dir_maps(repo: RepositoryPort, blob_id: bytes, data: bytes | None = None) -> list[NodeMap]:
    """One tree blob of a directory being walked, as stored maps (``data``: its bytes,
    when already read).

    The tree blobs of the subdirectories listed are located with one index query
    per blob read (``prefetch_locations``), not one per subdirectory.
    """
    maps = decode_tree_maps(repo.get_blob(blob_id) if data is None else data, blob_id)
    repo.prefetch_locations([i for m in maps if m.get("t") == "dir" for i in m.get("st", ())])
    return maps


def iter_dir_maps(repo: RepositoryPort, subtrees: list[bytes]) -> Iterator[NodeMap]:
    """Stream a directory's entries as stored maps, one tree blob at a time."""
    for blob_id in subtrees:
        yield from load_dir_maps(repo, blob_id)


class _Key(msgspec.Struct, gc=False):
    """The fields of a stored record that ``listing_cache.map_key`` reads (omitted = 0)."""

    n: bytes
    s: int = 0
    mt: int = 0
    ct: int = 0
    i: int = 0
    m: int = 0
    r: int = 0


class _TreeKeys(msgspec.Struct, gc=False):
    v: int
    nodes: list[_Key]


class _TreeRecords(msgspec.Struct, gc=False):
    nodes: list[msgspec.Raw]


_TREE_KEYS = msgspec.msgpack.Decoder(_TreeKeys)
_TREE_RECORDS = msgspec.msgpack.Decoder(_TreeRecords)


def tree_keys(data: bytes) -> tuple[tuple[bytes, ...], tuple[tuple[int, ...], ...]] | None:
    """The names and ``map_key``s of a tree blob's records, read in native code without
    building the records (~0.6 us a record, ~4 us to decode and key them); None when
    the blob does not read this way (``decode_tree_maps`` then tells)."""
    try:
        doc = _TREE_KEYS.decode(data)
    except msgspec.DecodeError:
        return None
    if doc.v != TREE_VERSION:
        return None
    nodes = doc.nodes
    return tuple(e.n for e in nodes), tuple((e.s, e.mt, e.ct, e.i, e.m, e.r) for e in nodes)


def tree_records(data: bytes) -> list[msgspec.Raw] | None:
    """A tree blob's records in their stored form, one each (None: not a tree blob):
    joined under ``tree_blob``, they give the blob again."""
    try:
        return _TREE_RECORDS.decode(data).nodes
    except msgspec.DecodeError:
        return None


# A node map in its stored form, the record ``tree_blob`` joins: the same bytes as
# ``msgpack.packb(m, use_bin_type=True)`` (``store_maps``), encoded by msgspec, ~5x
# faster per record (``packb`` builds a packer per call, and the tree saver encodes
# every new entry of a backup on its thread).
# Ferryman writes no msgpack extension values, but the format lets a record carry
# unknown keys of any type: one read back (``decode_tree_maps``: other codes as
# ``msgspec.msgpack.Ext``, code -1 as ``msgpack.Timestamp``) is encoded as it was stored.
def _timestamp_ext(value: object) -> msgspec.msgpack.Ext:
    if isinstance(value, msgpack.Timestamp):
        return msgspec.msgpack.Ext(-1, value.to_bytes())
    raise TypeError(f"{type(value).__name__} is not a tree record value")


encode_record: Callable[[NodeMap], bytes] = msgspec.msgpack.Encoder(enc_hook=_timestamp_ext).encode


# a tree blob's bytes before the length of its node list (``store_maps``' layout)
_TREE_HEAD: bytes = msgpack.packb({"v": TREE_VERSION, "nodes": []}, use_bin_type=True)[:-1]


def tree_blob(records: list[bytes | msgspec.Raw]) -> bytes:
    """The tree blob of node records given in their stored (msgpack) form, name-sorted:
    the same bytes as ``store_maps`` gives for the decoded records, so unchanged
    entries are copied, not re-encoded."""
    count = len(records)
    if count < 16:
        head = bytes([0x90 | count])  # fixarray
    elif count < 1 << 16:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    return b"".join([_TREE_HEAD, head, *records])


def store_maps(repo: RepositoryPort, writer: WriterPort, maps: list[NodeMap]) -> tuple[bytes, bool]:
    """Encode name-sorted node maps as one tree blob (same bytes as ``encode_tree``).

    Returns ``(id, new)``; ``new`` is False when the repository already had it.
    """
    data: bytes = msgpack.packb({"v": TREE_VERSION, "nodes": maps}, use_bin_type=True)
    blob_id = repo.blob_id(data)
    return blob_id, writer.add_blob(KIND_TREE, blob_id, data)
