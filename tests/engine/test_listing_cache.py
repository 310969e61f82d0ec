"""The local cache of compact tree listings: re-runs compare against it, never trust a
damaged one, and still see every kind of change."""

from __future__ import annotations

import os
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from ferryman.engine.backup import BackupFailed, run_backup
from ferryman.engine.listing_cache import (
    LISTINGS_FILE,
    CompactListing,
    ListingCache,
    StatKey,
    stat_key,
)
from ferryman.engine.options import BackupOptions, BackupResult
from ferryman.engine.restore import run_restore
from ferryman.engine.walk_helper_proc import LISTING_VERSION
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource

from .trees import diff_trees


def _backup(repo: Repository, src: Path) -> BackupResult:
    result = run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    assert result.status == "success", result.warnings
    return result


def _build(src: Path) -> None:
    deep = src / "d1" / "d2" / "d3"
    deep.mkdir(parents=True)
    for i in range(40):
        (deep / f"f{i:02}").write_bytes(os.urandom(64 + i))
        (src / "d1" / f"g{i:02}").write_bytes(os.urandom(32 + i))
    (src / "d1" / "link").symlink_to("g00")


def _settled(repo: Repository, src: Path) -> BackupResult:
    """Back up until a re-run reads and writes nothing (the first re-run may store
    directories whose atime the first backup moved)."""
    _backup(repo, src)
    _backup(repo, src)
    again = _backup(repo, src)
    assert again.stats.files_read == 0 and again.stats.trees_written == 0
    return again


def _listings(repo: Repository) -> Path:
    return repo.cache_path / LISTINGS_FILE


def _restored_equal(repo: Repository, result: BackupResult, src: Path, out: Path) -> None:
    assert result.restore_point is not None
    run_restore(repo, result.restore_point, out)
    assert diff_trees(src, out) == []


def _bend_key(
    path: Path, name: bytes, key: Callable[[StatKey], StatKey]
) -> list[tuple[bytes, bytes]]:
    """Rewrite, in every cached listing holding ``name``, that entry's stat key to
    ``key(old)`` under a valid checksum; returns each bent row's id and old data."""
    bent = []
    with sqlite3.connect(path) as db:
        for blob_id, data in db.execute("SELECT id, CAST(data AS BLOB) FROM listings").fetchall():
            listing = CompactListing.decode(data)
            assert listing is not None
            if name in listing.names:
                k = listing.names.index(name)
                keys = (*listing.keys[:k], key(listing.keys[k]), *listing.keys[k + 1 :])
                wrong = CompactListing(listing.names, keys, listing.dirs, listing.approx)
                db.execute("UPDATE listings SET data = ? WHERE id = ?", (wrong.encode(), blob_id))
                bent.append((blob_id, data))
    return bent


def test_rerun_gives_the_same_tree_with_a_missing_damaged_or_garbage_cache(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _build(src)
    settled = _settled(repo, src)
    path = _listings(repo)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, data FROM listings").fetchall()
    assert rows and all(CompactListing.decode(data) is not None for _, data in rows)

    path.unlink()  # missing: every previous tree blob is decoded, then cached again
    assert _backup(repo, src).root_tree == settled.root_tree
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM listings").fetchone()[0] == len(rows)
        # damaged rows (one flipped byte each): ignored, decoded from the repository
        db.execute("UPDATE listings SET data = substr(data, 1, 20) || x'ff' || substr(data, 22)")
    again = _backup(repo, src)
    assert again.root_tree == settled.root_tree and again.stats.files_read == 0
    with sqlite3.connect(path) as db:  # and written again, whole
        fixed = db.execute("SELECT CAST(data AS BLOB) FROM listings").fetchall()
    assert all(CompactListing.decode(data) is not None for (data,) in fixed)

    path.write_bytes(b"not a database" * 100)  # garbage: recreated
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert _backup(repo, src).root_tree == settled.root_tree
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM listings").fetchone()[0] == len(rows)

    # a change is still seen with the cache rebuilt
    with open(src / "d1" / "d2" / "d3" / "f30", "ab") as f:
        f.write(b"x")
    changed = _backup(repo, src)
    assert changed.stats.files_read == 1 and changed.root_tree != settled.root_tree
    _restored_equal(repo, changed, src, tmp_path / "out")


def test_changes_a_directory_stat_does_not_show_are_seen(repo: Repository, tmp_path: Path) -> None:
    """Content rewritten in place with the same size and mtime (ctime moves), a mode
    change and an xattr change deep in a tree whose directories' stat is unchanged."""
    src = tmp_path / "src"
    _build(src)
    _settled(repo, src)
    deep = src / "d1" / "d2" / "d3"
    dir_stat = os.stat(deep)
    victim = deep / "f10"
    st = os.stat(victim)
    victim.write_bytes(os.urandom(st.st_size))  # same size...
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and mtime
    os.chmod(deep / "f20", 0o600)  # mode (and ctime) only
    read = 2
    try:
        os.setxattr(deep / "f25", "user.note", b"v1")  # ctime only
        read += 1
    except OSError:
        pass  # the filesystem takes no user xattrs: the two other changes still count
    assert os.stat(deep).st_mtime_ns == dir_stat.st_mtime_ns
    result = _backup(repo, src)
    assert result.stats.files_read == read
    _restored_equal(repo, result, src, tmp_path / "out")
    out = tmp_path / "out" / "d1" / "d2" / "d3"
    assert (out / "f10").read_bytes() == victim.read_bytes()
    assert os.stat(out / "f20").st_mode & 0o777 == 0o600
    if read == 3:
        assert os.getxattr(out / "f25", "user.note") == b"v1"


def test_a_type_change_under_the_same_name_is_seen(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _build(src)
    _settled(repo, src)
    link = src / "d1" / "link"
    link.unlink()
    link.write_bytes(b"a file now")
    (src / "d1" / "g05").unlink()
    (src / "d1" / "g05").symlink_to("g06")
    result = _backup(repo, src)
    assert result.stats.files_read == 1
    _restored_equal(repo, result, src, tmp_path / "out")
    assert os.readlink(tmp_path / "out" / "d1" / "g05") == "g06"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00", b"\x00\x00\x00\x00garbage", b"\xff" * 40],
)
def test_damaged_listing_data_decodes_to_none(data: bytes) -> None:
    assert CompactListing.decode(data) is None


def test_listing_round_trip_and_one_flipped_byte() -> None:
    maps = [
        {"n": b"a", "t": "file", "s": 3, "mt": 5, "ct": 6, "i": 7, "m": 0o100644},
        {"n": b"b", "t": "dir", "st": [b"\x01" * 32], "m": 0o40755},
    ]
    listing = CompactListing.from_maps(maps)
    data = listing.encode()
    back = CompactListing.decode(data)
    assert back is not None
    assert back.names == (b"a", b"b")
    assert back.keys == ((3, 5, 6, 7, 0o100644, 0), (0, 0, 0, 0, 0o40755, 0))
    assert back.dirs[0] is None and back.dirs[1] is not None
    assert list(back.dirs[1]["st"]) == [b"\x01" * 32]
    flipped = bytearray(data)
    flipped[-3] ^= 0x40
    assert CompactListing.decode(bytes(flipped)) is None


def test_a_listing_is_stored_as_msgpack_packs_it() -> None:
    """The stored form is unchanged (the walk helper and listings cached by earlier
    versions read it): the bytes of ``msgpack.packb`` of the columns, with times
    before 1970, 64-bit values and a directory's record."""
    maps = [
        {"n": b"a", "t": "file", "s": 1 << 40, "mt": -5, "ct": 1 << 62, "i": 7, "m": 0o100644},
        {"n": b"b\xff", "t": "dir", "st": [b"\x01" * 32], "m": 0o40755, "u": "r\u00e9"},
        {"n": b"c", "t": "symlink", "mt": 1796050963238673968, "m": 0o120777},
    ]
    listing = CompactListing.from_maps(maps)
    cols = [LISTING_VERSION, listing.names, listing.keys, listing.dirs, listing.approx]
    body = msgpack.packb(cols, use_bin_type=True)
    assert listing.encode() == zlib.crc32(body).to_bytes(4, "big") + body


def test_a_change_in_a_large_directory_re_encodes_its_unchanged_blob_identically(
    repo: Repository, tmp_path: Path
) -> None:
    """Runs of unchanged entries kept undecoded in the tree saver's buffer, decoded when
    the directory is encoded again: the blob after the changed one keeps its id."""
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(5000):
        (big / f"e{i:05}").write_bytes(b"%d" % i)
    settled = _settled(repo, src)
    old_root = repo.get_tree(settled.root_tree)[0]
    (big / "e00100").write_bytes(b"changed in the first blob")
    changed = _backup(repo, src)
    assert changed.stats.files_read == 1 and changed.stats.files_unchanged == 4999
    root = repo.get_tree(changed.root_tree)[0]
    old_big = next(n for b in old_root.subtrees for n in repo.get_tree(b) if n.name == b"big")
    new_big = next(n for b in root.subtrees for n in repo.get_tree(b) if n.name == b"big")
    assert len(new_big.subtrees) == 2
    assert new_big.subtrees[0] != old_big.subtrees[0]
    assert new_big.subtrees[1] == old_big.subtrees[1]
    _restored_equal(repo, changed, src, tmp_path / "out")


def test_a_cache_file_past_its_size_bound_starts_again(tmp_path: Path) -> None:
    path = tmp_path / LISTINGS_FILE
    cache = ListingCache(path)
    listing = CompactListing.from_maps([{"n": b"a", "t": "file", "s": 1}])
    cache.put(b"\x01" * 32, listing)
    cache.close()
    kept = ListingCache(path)
    found = kept.get(b"\x01" * 32)
    assert found is not None and found.names == (b"a",)
    kept.close()
    small = ListingCache(path, max_bytes=1)  # the file is larger: emptied
    assert small.get(b"\x01" * 32) is None
    small.close()


def test_a_busy_cache_file_is_left_to_the_task_using_it_and_a_damaged_one_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tasks of one proxy share the file: when it stays locked past the wait, this
    task does without it; deleting it (with its -wal) would pull it from under the other."""
    path = tmp_path / LISTINGS_FILE
    cache = ListingCache(path)
    cache.put(b"\x01" * 32, CompactListing.from_maps([{"n": b"a", "t": "file", "s": 1}]))
    cache.close()
    inode = path.stat().st_ino
    real_open = ListingCache._open

    def busy(p: Path) -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ListingCache, "_open", staticmethod(busy))
    without = ListingCache(path)
    assert without.get(b"\x01" * 32) is None  # disabled for this task only
    without.close()
    assert path.stat().st_ino == inode  # kept, rows and all
    monkeypatch.setattr(ListingCache, "_open", staticmethod(real_open))
    kept = ListingCache(path)
    assert kept.get(b"\x01" * 32) is not None
    kept.close()

    path.write_bytes(b"not a database at all" * 100)  # damaged: started again
    fresh = ListingCache(path)
    assert fresh.get(b"\x01" * 32) is None
    fresh.put(b"\x02" * 32, CompactListing.from_maps([{"n": b"b", "t": "file", "s": 2}]))
    fresh.close()
    assert ListingCache(path).get(b"\x02" * 32) is not None


def test_a_cached_listing_that_disagrees_with_its_tree_blob_is_dropped_not_fatal(
    repo: Repository, tmp_path: Path
) -> None:
    """A row whose checksum is valid but whose stat key disagrees with the tree blob
    (written by other code, say): the entry is compared with the blob's record, the
    run of unchanged entries around it is checked against the blob when its directory
    is encoded again, the backup succeeds and the row is replaced by a right one (a
    'mismatch fails the task' here would fail every later backup of the share too)."""
    src = tmp_path / "src"
    _build(src)
    _settled(repo, src)
    path = _listings(repo)
    bent = _bend_key(path, b"f10", lambda k: (k[0], k[1] + 1, *k[2:]))
    assert len(bent) == 1
    result = _backup(repo, src)
    # f10 is read again (its cached key differs from its stat), nothing else is
    assert result.stats.files_read == 1
    _restored_equal(repo, result, src, tmp_path / "out")
    # the row was dropped; the directory, encoded again, kept its blob id (the next
    # backup decodes that blob as its previous one and caches its right listing)
    again = _backup(repo, src)
    assert again.stats.files_read == 0
    with sqlite3.connect(path) as db:
        (data,) = db.execute(
            "SELECT CAST(data AS BLOB) FROM listings WHERE id = ?", (bent[0][0],)
        ).fetchone()
    assert data == bent[0][1]


def test_deleted_renamed_added_and_non_utf8_entries_between_unchanged_runs_are_seen(
    repo: Repository, tmp_path: Path
) -> None:
    """Entries deleted, renamed and added between runs of unchanged entries, names
    that are not UTF-8 and sort differently as bytes, a symlink pointed elsewhere with
    a target of the same length, and a second hard link (link count only)."""
    src = tmp_path / "src"
    _build(src)
    deep = os.fsencode(src / "d1" / "d2" / "d3")
    for raw in (b"f05\xff", b"f05\xc3\xa9", b"f\xe9", b"F00"):  # \xff > \xc3 > ...
        with open(deep + b"/" + raw, "wb") as f:
            f.write(raw * 7)
    _settled(repo, src)
    d3 = src / "d1" / "d2" / "d3"
    (d3 / "f03").unlink()  # deleted just before a run of unchanged entries
    os.rename(d3 / "f07", d3 / "f07r")  # renamed: a new name, the old one gone
    os.unlink(deep + b"/f05\xff")
    with open(deep + b"/f05\xfe", "wb") as f:  # new non-UTF-8 name, same length
        f.write(b"new")
    with open(deep + b"/f\xe9", "ab") as f:  # changed non-UTF-8 name
        f.write(b"+")
    (d3 / "f39").unlink()  # the last entry
    link = src / "d1" / "link"
    link.unlink()
    link.symlink_to("g01")  # same target length as "g00"
    os.link(d3 / "f12", src / "d1" / "hard")  # f12's link count only (and ctime)
    result = _backup(repo, src)
    # f07r, f05\xfe, f\xe9 and the hard link pair (f12 with two links now)
    assert result.stats.files_read == 4
    out = tmp_path / "out"
    _restored_equal(repo, result, src, out)
    restored = set(os.listdir(os.fsencode(out / "d1" / "d2" / "d3")))
    assert {b"f03", b"f07", b"f05\xff", b"f39"}.isdisjoint(restored)
    assert {b"f07r", b"f05\xfe", b"f05\xc3\xa9", b"F00"} <= restored
    assert os.readlink(out / "d1" / "link") == "g01"
    with open(os.fsencode(out) + b"/d1/d2/d3/f\xe9", "rb") as f:
        assert f.read() == b"f\xe9" * 7 + b"+"
    assert os.stat(out / "d1" / "hard").st_ino == os.stat(out / "d1" / "d2" / "d3" / "f12").st_ino


def test_an_unusable_cache_file_never_fails_the_backup(repo: Repository, tmp_path: Path) -> None:
    """The cache cannot be opened (here a directory stands at its path): every
    previous tree blob is decoded, the backup succeeds and changes are still seen."""
    src = tmp_path / "src"
    _build(src)
    settled = _settled(repo, src)
    path = _listings(repo)
    path.unlink()
    path.mkdir()
    again = _backup(repo, src)
    assert again.root_tree == settled.root_tree and again.stats.files_read == 0
    with open(src / "d1" / "d2" / "d3" / "f30", "ab") as f:
        f.write(b"x")
    changed = _backup(repo, src)
    assert changed.stats.files_read == 1
    _restored_equal(repo, changed, src, tmp_path / "out")
    assert path.is_dir() and not any(path.iterdir())


def test_a_stale_listing_never_makes_a_changed_file_look_unchanged(
    repo: Repository, tmp_path: Path
) -> None:
    """A row claiming a changed file's new stat (the tree blob holds its old record):
    when the directory is encoded again, the blob's own key is checked and the task
    fails rather than storing the old content under the new stat; the row is dropped,
    so the next backup reads the file."""
    src = tmp_path / "src"
    _build(src)
    _settled(repo, src)
    d3 = src / "d1" / "d2" / "d3"
    with open(d3 / "f10", "ab") as f:
        f.write(b"new content")
    with open(d3 / "f20", "ab") as f:  # so that the directory is encoded again
        f.write(b"+")
    st = os.stat(d3 / "f10")
    now = stat_key(st, st.st_size)
    assert len(_bend_key(_listings(repo), b"f10", lambda _: now)) == 1
    with pytest.raises(BackupFailed, match="does not match its cached listing"):
        run_backup(LocalSource(src), repo, BackupOptions(share="s"))
    result = _backup(repo, src)
    assert result.stats.files_read == 2
    _restored_equal(repo, result, src, tmp_path / "out")
    assert (tmp_path / "out" / "d1" / "d2" / "d3" / "f10").read_bytes().endswith(b"new content")
