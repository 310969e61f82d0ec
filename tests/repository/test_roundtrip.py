"""Blobs, trees and restore points round-trip; dedup; compression decisions; caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferryman.repository import (
    KIND_DATA,
    KIND_TREE,
    BlobNotFound,
    Node,
    Repository,
    decode_tree,
    encode_tree,
    open_backend,
    split_tree,
)
from ferryman.repository.compression import COMPRESSION_NONE, COMPRESSION_ZSTD
from ferryman.repository.index_cache import PRESENT_BATCH

from .conftest import PASSPHRASE
from .snapshots import make_files, read_files, store_files


def test_blob_round_trip_and_dedup(repo: Repository) -> None:
    data = b"some file content " * 1000
    bid = repo.blob_id(data)
    assert len(bid) == 32
    with repo.open_writer("t") as w:
        assert w.add_blob(KIND_DATA, bid, data) is True
        assert w.add_blob(KIND_DATA, bid, data) is False  # same session
    assert repo.has_blob(bid)
    assert repo.get_blob(bid) == data
    with repo.open_writer("t2") as w:
        assert w.add_blob(KIND_DATA, bid, data) is False  # already in the index
        assert w.has_blob(bid)
    with pytest.raises(BlobNotFound):
        repo.get_blob(b"\1" * 32)


def test_has_blobs_confirms_indexed_and_session_blobs_in_one_call(repo: Repository) -> None:
    stored = [f"indexed {i}".encode() * 100 for i in range(3)]
    with repo.open_writer("t") as w:
        for data in stored:
            w.add_blob(KIND_DATA, repo.blob_id(data), data)
    indexed = [repo.blob_id(d) for d in stored]
    missing = [b"\2" * 32, b"\3" * 32]
    with repo.open_writer("t2") as w:
        fresh = b"added in this session" * 50
        w.add_blob(KIND_DATA, repo.blob_id(fresh), fresh)
        asked = [*indexed, *missing, repo.blob_id(fresh), indexed[0]]
        assert w.has_blobs(asked) == {*indexed, repo.blob_id(fresh)}
        assert w.has_blobs(asked) == {b for b in asked if w.has_blob(b)}
        assert w.has_blobs([]) == set()
        # ids past the first query's PRESENT_BATCH are confirmed too
        padding = [i.to_bytes(32, "big") for i in range(PRESENT_BATCH)]
        assert w.has_blobs([*padding, *indexed]) == set(indexed)


def test_blob_ids_are_keyed(repo: Repository, tmp_path: Path) -> None:
    other = Repository.init(
        open_backend(str(tmp_path / "other")), PASSPHRASE, scrypt_n=1024, cache_dir=tmp_path / "c"
    )
    assert other.blob_id(b"x") != repo.blob_id(b"x")
    assert other.keys.chunker_seed != repo.keys.chunker_seed
    other.close()


def test_keyed_chunker_cuts_differently_per_repository(repo: Repository, tmp_path: Path) -> None:
    other = Repository.init(
        open_backend(str(tmp_path / "other")),
        PASSPHRASE,
        scrypt_n=1024,
        chunker=repo.config.chunker,
        cache_dir=tmp_path / "c",
    )
    data = os.urandom(1 << 20)
    cuts_a = [c.offset for c in repo.chunker().cut_buf(data)]
    cuts_b = [c.offset for c in other.chunker().cut_buf(data)]
    assert cuts_a != cuts_b
    other.close()


def test_compression_is_skipped_for_random_data(repo: Repository) -> None:
    text = b"compressible text, repeated. " * 2000
    noise = os.urandom(60000)
    with repo.open_writer("t") as w:
        w.add_blob(KIND_DATA, repo.blob_id(text), text)
        w.add_blob(KIND_DATA, repo.blob_id(noise), noise)
    text_entry = repo.lookup(repo.blob_id(text))
    noise_entry = repo.lookup(repo.blob_id(noise))
    assert text_entry is not None and noise_entry is not None
    assert text_entry.compression == COMPRESSION_ZSTD and text_entry.length < len(text) / 10
    assert noise_entry.compression == COMPRESSION_NONE
    assert repo.get_blob(repo.blob_id(noise)) == noise


def test_partly_compressible_chunk_is_compressed(repo: Repository) -> None:
    """A chunk starting with random bytes but mostly text (a VM image's blocks) is
    compressed: the probe looks at slices spread over it, not only its start."""
    mixed = os.urandom(300_000) + b"log line of a VM image, mostly text. " * 20_000
    with repo.open_writer("t") as w:
        w.add_blob(KIND_DATA, repo.blob_id(mixed), mixed)
    entry = repo.lookup(repo.blob_id(mixed))
    assert entry is not None and entry.compression == COMPRESSION_ZSTD
    assert entry.length < 0.5 * len(mixed)
    assert repo.get_blob(repo.blob_id(mixed)) == mixed


def test_pack_buffers_are_kept_only_while_a_writer_is_open(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle proxy does not hold the pack buffers of its last backup."""
    from ferryman.repository import writer
    from ferryman.repository.pack_buffers import BufferPool

    # a pool of its own: writers other tests left open (simulated crashes) keep theirs
    POOL = BufferPool()
    monkeypatch.setattr(writer, "POOL", POOL)
    with repo.open_writer("outer", pack_size=100_000) as outer:
        with repo.open_writer("inner", pack_size=100_000) as inner:
            for i in range(8):
                data = os.urandom(60_000) + bytes([i])
                inner.add_blob(KIND_DATA, repo.blob_id(data), data)
        assert POOL.kept() > 0  # the outer writer may still reuse them
        data = b"outer blob" * 100
        outer.add_blob(KIND_DATA, repo.blob_id(data), data)
    assert POOL.kept() == 0
    assert repo.get_blob(repo.blob_id(data)) == data


_CHURN = """
import sys
from ferryman.repository import Repository, open_backend
from ferryman.repository.pack_buffers import return_free_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def churn():
    # chunk-sized blocks, all freed but the last one: how much stays resident
    size = 2 << 20
    before = rss()
    blocks = [b"\\1" * size for _ in range(32)]
    last = blocks[-1]
    del blocks
    grown = rss() - before
    del last
    return grown

big = b"\\1" * (8 << 20)  # freeing it raises glibc's dynamic mmap threshold to 8 MiB
del big
control = churn()
return_free_memory()
repo = Repository.init(open_backend(sys.argv[1] + "/repo"), "pw", scrypt_n=1 << 10,
                       cache_dir=sys.argv[1] + "/cache")
print(control >> 20, churn() >> 20)
repo.close()
"""


def test_a_process_that_opens_a_repository_gives_freed_chunk_buffers_back(
    tmp_path: Path,
) -> None:
    """Once a repository is open (a proxy's task, a restore worker), a freed chunk-sized
    buffer leaves the process at once instead of staying in malloc's heap."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _CHURN, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
    ).stdout
    control_mb, after_mb = map(int, out.split())
    assert control_mb >= 40  # without it, the freed blocks stayed resident
    assert after_mb <= 8


def test_trees_keep_every_node_field_and_non_utf8_names() -> None:
    node = Node(
        name=b"caf\xe9\n\xff",
        type="file",
        mode=0o100600,
        uid=1000,
        gid=100,
        user="alice",
        group="users",
        mtime_ns=1_700_000_000_123_456_789,
        atime_ns=1,
        ctime_ns=2,
        inode=42,
        dev=2049,
        nlink=2,
        size=10,
        content=[b"\1" * 32, b"\2" * 32],
        holes=[(0, 4096), (8192, 4096)],
        rdev=0,
        xattrs={b"user.k\xff": b"\0v"},
        acl_access=b"\x02\x00",
        acl_default=b"",
        link_to=b"other/f\xff",
        extra={"smb": {"attributes": 32}},
    )
    link = Node(name=b"l", type="symlink", link_target=b"/target/\xfe")
    dev = Node(name=b"dev", type="chardev", rdev=259)
    decoded = decode_tree(encode_tree([node, link, dev]))
    assert decoded == sorted([node, link, dev], key=lambda n: n.name)


def test_large_directories_span_tree_blobs() -> None:
    nodes = [Node(name=f"f{i:05d}".encode(), type="file") for i in range(10_000)]
    blobs = list(split_tree(nodes))
    assert len(blobs) == 3
    assert [n.name for b in blobs for n in decode_tree(b)] == [n.name for n in nodes]


def test_snapshot_round_trip_with_subtrees(repo: Repository, repo_url: str) -> None:
    files = make_files(7, count=40)
    with repo.open_writer("t", pack_size=32 << 10) as w:
        root = store_files(repo, w, files, max_nodes=3)
        point = w.save_restore_point(share="share1", root=root, job="j", stats={"files": 40})
    with Repository.open(open_backend(repo_url), PASSPHRASE) as fresh:
        (listed,) = fresh.list_restore_points()
        assert listed == point
        assert read_files(fresh, listed.root) == files


def test_restore_points_checkpoints_and_delete(repo: Repository) -> None:
    with repo.open_writer("t") as w:
        root = store_files(repo, w, make_files(1))
        cp = w.save_restore_point(share="s", root=root, checkpoint=True)
        final = w.save_restore_point(share="s", root=root, parent=None, session="sess")
    assert [p.id for p in repo.list_restore_points()] == [final.id]
    assert {p.id for p in repo.list_restore_points(include_checkpoints=True)} == {cp.id, final.id}
    assert repo.load_restore_point(cp.id).checkpoint
    repo.delete_restore_point(final.id)
    assert repo.list_restore_points() == []


def test_tree_packs_are_cached_on_the_proxy(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    files = make_files(3, count=30)
    with repo.open_writer("t") as w:
        point = w.save_restore_point(share="s", root=store_files(repo, w, files, max_nodes=4))
    cache = tmp_path / "proxy-cache"
    with Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=cache) as first:
        trees = _walk_trees(first, point.root)
        assert first.stats.gets > 0
    with Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=cache) as second:
        before = second.stats.snapshot()
        assert _walk_trees(second, point.root) == trees
        after = second.stats.snapshot()
        assert after["gets"] == before["gets"] and after["range_gets"] == before["range_gets"]


def _walk_trees(repo: Repository, root: bytes) -> int:
    count, pending = 0, [root]
    while pending:
        nodes = repo.get_tree(pending.pop())
        count += 1
        for n in nodes:
            pending.extend(n.subtrees)
    return count


def test_concurrent_add_blob_from_threads(repo: Repository) -> None:
    from concurrent.futures import ThreadPoolExecutor

    blobs = [os.urandom(5000) + bytes([i % 7]) * 5000 for i in range(200)]
    blobs += blobs[:50]  # duplicates across threads
    with repo.open_writer("t", pack_size=40_000, uploads=2) as w:
        with ThreadPoolExecutor(4) as pool:
            added = list(pool.map(lambda b: w.add_blob(KIND_DATA, repo.blob_id(b), b), blobs))
        assert sum(added) == 200
        tree = encode_tree([Node(name=b"x", type="file", content=[repo.blob_id(b) for b in blobs])])
        w.add_blob(KIND_TREE, repo.blob_id(tree), tree)
        w.save_restore_point(share="s", root=repo.blob_id(tree))
    for b in blobs:
        assert repo.get_blob(repo.blob_id(b)) == b
    assert repo.check(read_data=True).ok


def test_flush_makes_blobs_visible_to_other_processes(repo: Repository, repo_url: str) -> None:
    data = b"checkpointed" * 100
    with repo.open_writer("t") as w:
        w.add_blob(KIND_DATA, repo.blob_id(data), data)
        w.flush()
        with Repository.open(open_backend(repo_url), PASSPHRASE) as other:
            assert other.get_blob(repo.blob_id(data)) == data


def test_blob_filter_has_no_false_negatives() -> None:
    from ferryman.repository.blob_filter import BlobFilter

    f = BlobFilter(bits=1 << 16)
    ids = [os.urandom(32) for _ in range(2000)]
    fresh = [f.add(i) for i in ids[:1000]]  # add says whether an id may have been seen
    assert sum(fresh) < 50
    assert all(i in f for i in ids[:1000])
    assert all(f.add(i) for i in ids[:1000])  # a second add: certainly seen
    assert sum(i in f for i in ids[1000:]) < 50


def test_damaged_local_tree_cache_falls_back_to_the_repository(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    files = make_files(4, count=10)
    with repo.open_writer("t") as w:
        point = w.save_restore_point(share="s", root=store_files(repo, w, files))
    cache = tmp_path / "proxy"
    with Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=cache) as proxy:
        assert read_files(proxy, point.root) == files
        for cached in (proxy.cache_path / "packs").iterdir():
            data = bytearray(cached.read_bytes())
            data[len(data) // 2] ^= 0xFF
            cached.write_bytes(bytes(data))
    with Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=cache) as proxy:
        assert read_files(proxy, point.root) == files


def test_get_blobs_reads_a_pack_with_few_requests(repo: Repository) -> None:
    blobs = {}
    with repo.open_writer("t", pack_size=1 << 20) as w:
        for i in range(300):
            data = os.urandom(100) + bytes([i % 251]) * (i * 10)
            blobs[repo.blob_id(data)] = data
            w.add_blob(KIND_DATA, repo.blob_id(data), data)
    before = repo.stats.snapshot()
    got = dict(repo.get_blobs(list(blobs)))
    after = repo.stats.snapshot()
    assert got == blobs
    assert after["range_gets"] - before["range_gets"] <= 3
    with pytest.raises(BlobNotFound):
        list(repo.get_blobs([b"\x09" * 32]))
    some = list(blobs)[:5]
    assert dict(repo.get_blobs(some[:1])) == {some[0]: blobs[some[0]]}  # a single record
    found = repo.index_cache.lookup_many([*some, b"\x09" * 32])
    assert set(found) == set(some)
    assert all(found[b] == repo.index_cache.lookup(b) for b in some)
    padding = [i.to_bytes(32, "big") for i in range(PRESENT_BATCH)]
    assert set(repo.index_cache.lookup_many([*padding, *some])) == set(some)  # a 2nd query


def test_index_total_length_is_the_sum_of_the_pack_totals(repo: Repository) -> None:
    assert repo.index_cache.total_length() == 0  # empty index: no NULL
    with repo.open_writer("t", pack_size=1 << 16) as w:
        for i in range(50):
            data = os.urandom(3000 + i)
            w.add_blob(KIND_DATA, repo.blob_id(data), data)
    repo.sync_index()
    totals = repo.index_cache.pack_totals()
    assert len(totals) > 1
    assert repo.index_cache.total_length() == sum(totals.values()) > 50 * 3000


def test_scratch_files_of_crashed_writers_are_removed(repo: Repository, repo_url: str) -> None:
    from ferryman.repository.scratch import remove_stale

    leftover = repo.cache_path / "writer-deadbeef.sqlite"
    leftover.write_bytes(b"")
    with repo.open_writer("live") as w:
        live = list(repo.cache_path.glob("writer-*.sqlite"))
        assert len(live) == 2
        assert remove_stale(repo.cache_path) == 1
        assert not leftover.exists()
        data = b"still works"
        w.add_blob(KIND_DATA, repo.blob_id(data), data)
    assert not list(repo.cache_path.glob("writer-*.sqlite"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("m", True, "mode must be an integer"),
        ("s", "12", "size must be an integer"),
        ("n", "text", "name must be bytes"),
        ("c", [b"short"], "32-byte ids"),
        ("h", [[0, True]], "holes must be"),
        ("x", {b"k": "v"}, "xattrs must map bytes"),
        ("t", "door", "unknown node type"),
    ],
)
def test_a_node_field_of_the_wrong_type_is_a_format_error(
    field: str, value: object, message: str
) -> None:
    import msgpack

    from ferryman.repository.tree import TREE_VERSION, TreeFormatError, node_to_map

    node = Node(name=b"f", type="file", mode=0o100644, size=1)
    doc = {**node_to_map(node), "future-key": "ignored"}  # unknown keys are ignored
    assert decode_tree(msgpack.packb({"v": TREE_VERSION, "nodes": [doc]})) == [node]
    doc[field] = value
    data = msgpack.packb({"v": TREE_VERSION, "nodes": [doc]}, use_bin_type=True)
    with pytest.raises(TreeFormatError, match=message):
        decode_tree(data)
