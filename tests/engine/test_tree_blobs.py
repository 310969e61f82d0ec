"""Tree blobs encoded again from their stored records: a directory changed in one entry
keeps its other entries' bytes, and the blob is the one encoding every record gives."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.listing_cache import map_key
from ferryman.engine.nodes import (
    MAX_NODES_PER_TREE,
    NodeMap,
    load_root,
    load_tree_maps,
    tree_blob,
    tree_keys,
    tree_records,
)
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.repository.tree import TREE_VERSION
from ferryman.sources.local import LocalSource

from .trees import diff_trees


def _encode(maps: list[NodeMap]) -> bytes:
    data: bytes = msgpack.packb({"v": TREE_VERSION, "nodes": maps}, use_bin_type=True)
    return data


def _maps(count: int) -> list[NodeMap]:
    return [
        {"n": b"e%06d" % i, "t": "file", "m": 0o100644, "mt": 10**18 + i, "s": i, "i": 7 + i}
        for i in range(count)
    ]


# the node list's length takes 1, 3 or 5 bytes (fixarray, array 16, array 32)
@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, MAX_NODES_PER_TREE, 70_000])
def test_a_blob_from_stored_records_is_the_blob_of_the_records(count: int) -> None:
    maps = _maps(count)
    data = _encode(maps)
    records = tree_records(data)
    assert records is not None and len(records) == count
    assert tree_blob(list(records), count) == data
    assert tree_keys(data) == (tuple(m["n"] for m in maps), tuple(map(map_key, maps)))
    if count > 2:  # one record replaced by a new encoding between two stored runs
        changed = dict(maps[1], s=99, mt=5)
        mixed = [*records[:1], msgpack.packb(changed, use_bin_type=True), *records[2:]]
        assert tree_blob(mixed, count) == _encode([maps[0], changed, *maps[2:]])


def test_a_blob_whose_keys_do_not_read_natively_is_left_to_the_decoder() -> None:
    """Not a tree blob, another version, a size that is not a number: no keys (the
    caller then decodes the records and compares them one by one)."""
    assert tree_keys(b"\xc1") is None
    assert tree_keys(msgpack.packb({"v": TREE_VERSION + 1, "nodes": []})) is None
    odd = _encode([{"n": b"a", "t": "file", "s": "12"}])
    assert tree_keys(odd) is None
    assert tree_records(b"\x93\x01") is None


def _backup(repo: Repository, src: Path) -> BackupResult:
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.status == "success", result.warnings
    return result


def _big_dir_blobs(repo: Repository, result: BackupResult) -> list[bytes]:
    assert result.restore_point is not None
    root = load_root(repo, repo.load_restore_point(result.restore_point).root)
    [big] = [n for b in root.subtrees for n in repo.get_tree(b) if n.name == b"big"]
    return big.subtrees


def test_an_entry_added_early_in_a_large_directory_moves_every_later_boundary(
    repo: Repository, tmp_path: Path
) -> None:
    """One entry added in the first of two full-ish tree blobs: the runs of unchanged
    entries straddle the moved boundary and are split where a blob fills, and each
    blob written is byte for byte the encoding of its records."""
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(5000):
        (big / f"e{i:05}").write_bytes(b"%d" % i)
    before = _big_dir_blobs(repo, _backup(repo, src))
    assert [len(load_tree_maps(repo, b)) for b in before] == [MAX_NODES_PER_TREE, 904]
    (big / "e00010a").write_bytes(b"added early")
    os.unlink(big / "e04999")  # and the last entry gone
    changed = _backup(repo, src)
    assert changed.stats.files_read == 1 and changed.stats.files_unchanged == 4999
    after = _big_dir_blobs(repo, changed)
    maps = [load_tree_maps(repo, b) for b in after]
    assert [len(m) for m in maps] == [MAX_NODES_PER_TREE, 904]
    assert maps[0][11]["n"] == b"e00010a" and maps[1][0]["n"] == b"e04095"
    for blob_id, records in zip(after, maps, strict=True):
        assert repo.get_blob(blob_id) == _encode(records)
    out = tmp_path / "out"
    assert changed.restore_point is not None
    run_restore(repo, changed.restore_point, out)
    assert diff_trees(src, out) == []
