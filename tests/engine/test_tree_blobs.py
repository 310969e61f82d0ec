"""Tree blobs encoded again from their stored records: a directory changed in one entry
keeps its other entries' bytes, and the blob is the one encoding every record gives."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import msgpack
import msgspec
import pytest

from ferryman.engine import listing_cache, nodes, tree_saver
from ferryman.engine.backup import run_backup
from ferryman.engine.file_saver import FileOutcome, LargeRead, PendingContent
from ferryman.engine.listing_cache import (
    LISTINGS_FILE,
    CompactListing,
    PrevBlob,
    StatKey,
    map_key,
)
from ferryman.engine.nodes import (
    MAX_NODES_PER_TREE,
    Node,
    NodeMap,
    decode_tree_maps,
    encode_record,
    load_root,
    load_tree_maps,
    node_from_map,
    node_from_stat,
    node_to_map,
    tree_blob,
    tree_keys,
    tree_records,
)
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.ports import RepositoryPort
from ferryman.engine.restore import run_restore
from ferryman.engine.stats import StatsCollector
from ferryman.repository import Repository
from ferryman.repository.blob import KIND_TREE
from ferryman.repository.tree import TARGET_TREE_BYTES, TREE_VERSION, encode_tree
from ferryman.sources.local import LocalDir, LocalSource

from .test_listing_cache import _bend_key
from .trees import diff_trees


def _encode(maps: list[NodeMap]) -> bytes:
    data: bytes = msgpack.packb({"v": TREE_VERSION, "nodes": maps}, use_bin_type=True)
    return data


def _decode(data: bytes) -> list[NodeMap]:
    return decode_tree_maps(data, b"test")


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
    assert tree_blob(list(records)) == data
    assert tree_keys(data) == (tuple(m["n"] for m in maps), tuple(map(map_key, maps)))
    if count > 2:  # one record replaced by a new encoding between two stored runs
        changed = dict(maps[1], s=99, mt=5)
        mixed = [*records[:1], msgpack.packb(changed, use_bin_type=True), *records[2:]]
        assert tree_blob(mixed) == _encode([maps[0], changed, *maps[2:]])


def test_records_of_every_field_type_are_copied_as_a_fresh_encoding_gives_them() -> None:
    """Ferryman writes records with msgpack's shortest forms (ints, str/bin lengths,
    float64), which decoding and encoding again give back: a copied record is the
    one a fresh encoding of its node gives, for every field type of docs/format.md."""
    node = Node(
        name=b"n\xff" * 20,
        type="file",
        mode=0o100644,
        uid=2**32 - 2,
        user="u" * 40,  # str8
        group="\u00e9quipe",
        mtime_ns=-(10**18),  # before 1970: int64
        atime_ns=127,
        ctime_ns=128,
        inode=2**64 - 1,
        dev=2**31,
        nlink=2,
        size=70_000,
        content=[bytes(range(32))] * 3,
        holes=[(0, 4096), (2**40, 1)],
        xattrs={b"user.k": b"v" * 300, b"user.empty": b""},  # bin16
        acl_access=b"\x02\x00\x00\x00",
        extra={"ratio": 0.5, "flags": [True, None, -1], "nested": {"k": "v"}},
    )
    other = Node(name=b"z", type="symlink", link_target=b"t" * 70_000)  # bin32
    maps = [node_to_map(node), node_to_map(other)]
    data = _encode(maps)
    records = tree_records(data)
    assert records is not None
    assert tree_blob(list(records)) == data == encode_tree([node, other])
    assert _encode(_decode(data)) == data
    # the tree saver's encoding of new entries gives the same bytes
    assert tree_blob([encode_record(m) for m in maps]) == data
    assert [encode_record(m) for m in _decode(data)] == [bytes(r) for r in records]


def test_a_node_map_omits_default_fields_and_gives_the_node_back() -> None:
    """Only fields that differ from their default are stored, in the format's key
    order, holes as [offset, length] lists; decoding the map gives the node again."""
    bare = Node(name=b"d", type="dir")
    assert node_to_map(bare) == {"n": b"d", "t": "dir"}
    node = Node(name=b"f", type="file", size=9, nlink=1, holes=[(0, 4096)], link_to=b"a/b")
    m = node_to_map(node)
    assert m == {"n": b"f", "t": "file", "s": 9, "h": [[0, 4096]], "lt": b"a/b"}
    assert list(m) == ["n", "t", "s", "h", "lt"]
    assert node_from_map(m) == node
    full = node_from_stat(b"x", os.lstat(__file__))
    full.content, full.xattrs = [bytes(32)], {b"user.k": b"v"}
    assert node_from_map(node_to_map(full)) == full


# ints on both sides of every msgpack width (fixint, int8..int64, uint8..uint64: sizes,
# inodes, device numbers and ns timestamps up to 2**64 - 1, times before 1970), float
# specials, str and bin at their length boundaries, empty and non-UTF-8 bytes
_EDGE_INTS = {
    s * (2**p + d) for p in (5, 7, 8, 15, 16, 31, 32, 63) for d in (-1, 0, 1) for s in (1, -1)
} - {-(2**63) - 1}
_EDGE_VALUES: list[object] = [
    *sorted(_EDGE_INTS),
    *(0, 2**64 - 1, 1.0, -0.0, float("inf"), float("nan"), 1e300, 5e-324, None, True, False),
    *(k * n for n in (0, 31, 32, 255, 256, 65_535, 65_536) for k in ("u", b"\xff")),
]


def test_encode_record_gives_msgpack_s_bytes_at_every_width_boundary() -> None:
    """The tree saver's ``encode_record`` (msgspec) writes every value as
    ``msgpack.packb`` does, at the edges where msgpack changes its form, as a field
    and nested (a tree blob id that drifts would store every tree again)."""
    for value in _EDGE_VALUES:
        for m in ({"n": b"x", "t": "file", "s": value}, {"n": b"", "e": {"v": [value]}}):
            assert encode_record(m) == msgpack.packb(m, use_bin_type=True), m
    many = {"n": b"\x80", "c": [bytes(32)] * 16, "x": {b"k%d" % i: b"" for i in range(16)}}
    assert encode_record(many) == msgpack.packb(many, use_bin_type=True)  # array16, map16
    reordered = {"t": "dir", "n": b"d"}  # kept in the map's order, as packb keeps it
    assert encode_record(reordered) == msgpack.packb(reordered, use_bin_type=True)
    # a value msgpack cannot store fails as packb fails
    for bad in (2**64, -(2**63) - 1):
        for encode in (encode_record, msgpack.packb):
            with pytest.raises(OverflowError):
                encode({"n": b"x", "i": bad})
    for encode in (encode_record, msgpack.packb):
        with pytest.raises(UnicodeEncodeError):  # a non-UTF-8 owner name, surrogate-escaped
            encode({"n": b"x", "U": b"\xff".decode("utf-8", "surrogateescape")})


def test_extension_values_read_from_a_tree_blob_are_encoded_back_as_stored() -> None:
    """Ferryman writes no msgpack extension values, but a record may carry unknown keys
    of any type (a later version's): read by ``decode_tree_maps`` and encoded again by
    the tree saver, each keeps its bytes (a timestamp in its three widths, other codes)
    rather than turning into an array or failing the backup."""
    stamps = [msgpack.Timestamp(1, 0), msgpack.Timestamp(1, 2), msgpack.Timestamp(2**35, 5)]
    for stamp in [*stamps, msgpack.Timestamp(-5, 7)]:
        record = {
            "n": b"x",
            "t": "file",
            "zz": stamp,
            "e": {"k": msgpack.ExtType(5, b"xy"), "l": [msgpack.ExtType(127, b"")]},
        }
        blob = msgpack.packb({"v": TREE_VERSION, "nodes": [record]}, use_bin_type=True)
        (read,) = nodes.decode_tree_maps(blob, bytes(32))
        assert encode_record(read) == msgpack.packb(record, use_bin_type=True), stamp
    with pytest.raises(TypeError):  # a value no tree record can hold still fails
        encode_record({"n": b"x", "zz": object()})


def test_a_record_not_in_the_shortest_form_is_copied_as_it_is() -> None:
    """A record Ferryman never writes (a small int as uint64): copied, it keeps its
    bytes, so the blob's id is not a fresh encoding's; its nodes read the same."""
    fresh = _encode([{"n": b"a", "t": "file", "s": 5}])
    long_int = fresh.replace(b"\xa1s\x05", b"\xa1s\xcf" + (5).to_bytes(8, "big"))
    records = tree_records(long_int)
    assert records is not None
    copied = tree_blob(list(records))
    assert copied == long_int != fresh
    assert _decode(copied) == _decode(fresh)


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


def _settle(src: Path) -> None:
    """Read every file and list every directory once, so that the backups that follow
    (reading them again) move no atime (relatime): a record's ``at`` is the same in
    every backup of an unchanged entry."""
    for d, _, files in os.walk(src):
        os.listdir(d)
        for f in files:
            path = Path(d, f)
            os.readlink(path) if path.is_symlink() else path.read_bytes()


def _copied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of stored records each ``PrevBlob.records`` call copied."""
    copied: list[int] = []
    real = PrevBlob.records

    def records(self: PrevBlob, start: int, stop: int) -> list[msgspec.Raw] | None:
        raws = real(self, start, stop)
        copied.append(0 if raws is None else len(raws))
        return raws

    monkeypatch.setattr(PrevBlob, "records", records)
    return copied


def _unpacked(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The ids of the previous tree blobs decoded record by record (``PrevBlob.maps``)."""
    unpacked: list[bytes] = []
    real = nodes.load_dir_maps

    def load_dir_maps(repo: RepositoryPort, blob_id: bytes, data: bytes | None) -> list[NodeMap]:
        unpacked.append(blob_id)
        return real(repo, blob_id, data)

    monkeypatch.setattr(listing_cache, "load_dir_maps", load_dir_maps)
    return unpacked


# target bytes of a tree blob: the default (blobs cut at 4096 entries) and one cut by
# size, with records of different sizes (long symlink targets)
@pytest.mark.parametrize("target", [TARGET_TREE_BYTES, 40_000])
def test_changes_at_moved_blob_boundaries_give_the_trees_of_a_full_backup(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: int
) -> None:
    """A directory spanning several tree blobs, changed at their boundaries, before its
    first and after its last entry, with entries added then removed (every later
    boundary moves): each backup copying unchanged records gives the root tree of a
    full backup of the same files (no parent: every record encoded anew) and of one
    with the copying disabled (every record decoded and encoded again)."""
    monkeypatch.setattr(tree_saver, "TARGET_TREE_BYTES", target)
    copied = _copied(monkeypatch)
    unpacked = _unpacked(monkeypatch)
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    count = 9_000 if target == TARGET_TREE_BYTES else 3_000
    for i in range(count):
        if i % 7 == 3:
            os.symlink(b"t" * (1 + i % 300), big / f"e{i:05}")
        else:
            (big / f"e{i:05}").write_bytes(b"%d" % i)
    _settle(src)
    previous = _backup(repo, src)
    blobs = _big_dir_blobs(repo, previous)
    assert len(blobs) >= 3
    sizes = [len(load_tree_maps(repo, b)) for b in blobs]
    ends = [sum(sizes[: k + 1]) for k in range(len(sizes) - 1)]  # first entry of blob k+1

    def name(i: int) -> str:
        return f"e{i:05}"

    rounds: list[tuple[list[str], list[str], list[str]]] = [  # (added, changed, removed)
        (
            ["a-first", "e00000a", "e00001a", f"{name(ends[0] - 1)}a", "z-last"],
            [name(ends[0] - 1), name(ends[0]), name(ends[1] - 1), name(count - 1)],
            [name(ends[1]), name(ends[1] + 1)],
        ),
        (
            [f"{name(ends[1] - 2)}b"],
            ["a-first", name(ends[0] + 1), "z-last"],
            ["e00000", "e00002", "e00003", "e00004", name(ends[0] - 2), name(count - 2)],
        ),
        ([], [], ["a-first", "z-last", name(count - 1), name(ends[0] - 1), name(ends[0])]),
    ]
    for added, changed, removed in rounds:
        for n in added + changed:
            (big / n).unlink(missing_ok=True)
            (big / n).write_bytes(b"new " + n.encode())
        for n in removed:
            (big / n).unlink()
        _settle(src)
        copied.clear()
        unpacked.clear()
        result = _backup(repo, src)
        # every unchanged entry copied as stored; the blobs' keys checked, none decoded
        assert sum(copied) == len(os.listdir(big)) - len({*added, *changed})
        assert unpacked == []
        full = run_backup(LocalSource(src), repo, BackupOptions(share="s", use_parent=False))
        assert full.stats.files_unchanged == 0
        with monkeypatch.context() as m:
            m.setattr(PrevBlob, "records", lambda self, start, stop: None)
            assert previous.restore_point is not None
            decoded = run_backup(
                LocalSource(src), repo, BackupOptions(share="s", parent=previous.restore_point)
            )
        assert result.root_tree == full.root_tree == decoded.root_tree
        for blob_id in _big_dir_blobs(repo, result):
            assert repo.get_blob(blob_id) == _encode(load_tree_maps(repo, blob_id))
        previous = result
    assert previous.restore_point is not None
    run_restore(repo, previous.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def _saved_dir(repo: Repository, src: Path, events: list[tree_saver.Event]) -> list[bytes]:
    """The tree blob ids of the directory ``src`` whose entries are ``events``, the
    previous backup trusted (runs of unchanged entries are added undecoded)."""
    with repo.open_writer("test") as writer:
        trees = tree_saver.TreeSaver(repo, writer, StatsCollector(), trust_reused=True)
        root = node_from_stat(b"root", os.stat(src))
        trees.put([tree_saver.EnterDir(root, b""), *events, tree_saver.LeaveDir()])
        node = trees.finish()
    assert node is not None
    return node.subtrees


def test_a_run_after_a_held_file_filled_the_blob_takes_its_first_entry_as_add_does(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held large file whose record (large xattrs) fills the tree blob once it is
    completed (here by a checkpoint): the run of unchanged entries after it is split
    with its first entry in that blob, where adding them one by one stores it (before
    17cc453 the split took no entry: a blob of the held file alone, then the run)."""
    target = 4000
    monkeypatch.setattr(tree_saver, "TARGET_TREE_BYTES", target)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.img").write_bytes(b"image")
    maps = _maps(20)
    data = _encode(maps)
    with repo.open_writer("test") as writer:
        blob_id = repo.blob_id(data)
        writer.add_blob(KIND_TREE, blob_id, data)
    prev = PrevBlob(repo, blob_id, CompactListing.from_maps(maps), data=data)
    assert sum(prev.listing.approx) < target

    def image() -> tree_saver.Entry:
        outcome = FileOutcome(size=5, xattrs={b"user.big": b"x" * target})
        pending = PendingContent(lambda: outcome, lambda timeout: False, LargeRead())
        return tree_saver.Entry(node_from_stat(b"a.img", os.stat(src / "a.img")), b"a.img", pending)

    # trusted: the run's directory (not owned, never released) is not read
    run = tree_saver.RawRun(tree_saver.PrevRun(prev, 0, len(maps)), [], LocalDir(-1), b"")
    split = _saved_dir(repo, src, [image(), tree_saver.CheckpointNow(), run])
    one_by_one = [tree_saver.Entry(None, m["n"], raw=m) for m in maps]
    added = _saved_dir(repo, src, [image(), tree_saver.CheckpointNow(), *one_by_one])
    assert [[m["n"] for m in load_tree_maps(repo, b)] for b in split] == [
        [b"a.img", b"e000000"],
        [m["n"] for m in maps[1:]],
    ]
    assert split == added


def test_a_cached_listing_with_a_wrong_key_copies_nothing_from_its_blob(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing row (valid checksum) with a wrong stat key for an unchanged file, in a
    directory stored again: the file is read again, and the blob's other records are
    not copied (its keys disagree with the row) but decoded and compared; the tree is
    a full backup's, the row is dropped."""
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(5000):
        (big / f"e{i:05}").write_bytes(b"%d" % i)
    _settle(src)
    before = _backup(repo, src)
    first, _ = _big_dir_blobs(repo, before)
    (big / "e04500").write_bytes(b"changed")  # in the second blob: the directory is stored again
    _settle(src)
    bent = _bend_key(repo.cache_path / LISTINGS_FILE, b"e00100", lambda k: (k[0], k[1] + 1, *k[2:]))
    assert [blob_id for blob_id, _ in bent] == [first]
    copied = _copied(monkeypatch)
    result = _backup(repo, src)
    assert result.stats.files_read == 2
    assert 0 in copied and sum(copied) == 5000 - MAX_NODES_PER_TREE - 1
    full = run_backup(LocalSource(src), repo, BackupOptions(share="s", use_parent=False))
    assert result.root_tree == full.root_tree
    with sqlite3.connect(repo.cache_path / LISTINGS_FILE) as db:
        assert db.execute("SELECT 1 FROM listings WHERE id = ?", (first,)).fetchall() == []
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, tmp_path / "out")
    assert diff_trees(src, tmp_path / "out") == []


def test_records_never_copies_from_a_blob_that_maps_is_finding_stale(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scanner may decode a previous blob (``maps``) while the tree saver copies
    from it (``records``): with ``maps`` between reading the blob and finding its
    cached listing stale, ``records`` checks the blob itself and copies nothing (it
    took the bytes ``maps`` had read as already checked)."""
    maps = _maps(20)
    data = _encode(maps)
    with repo.open_writer("test") as writer:
        blob_id = repo.blob_id(data)
        writer.add_blob(KIND_TREE, blob_id, data)
    right = CompactListing.from_maps(maps)
    keys = list(right.keys)
    keys[5] = (keys[5][0], keys[5][1] + 1, *keys[5][2:])
    blob = PrevBlob(
        repo, blob_id, CompactListing(right.names, tuple(keys), right.dirs, right.approx)
    )
    comparing, go = threading.Event(), threading.Event()
    real = listing_cache.map_key

    def map_key(m: NodeMap) -> StatKey:
        if not comparing.is_set():  # the first call: the scanner's ``maps``
            comparing.set()
            assert go.wait(10)
        return real(m)

    monkeypatch.setattr(listing_cache, "map_key", map_key)
    scanner = threading.Thread(target=blob.maps)
    scanner.start()
    try:
        assert comparing.wait(10)
        copied = blob.records(0, len(maps))
    finally:
        go.set()
        scanner.join()
    assert copied is None and blob.stale
