"""Garbage collection: two phases, fenced by writer leases."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from ferryman.repository import KIND_DATA, BlobNotFound, LeaseExpired, Repository, index
from ferryman.repository.backend import open_backend
from ferryman.repository.index import IndexEntry
from ferryman.repository.lease import WriterLease

from .conftest import PASSPHRASE
from .snapshots import make_files, read_files, store_files


def _backup(repo: Repository, seed: int) -> tuple[str, dict[bytes, bytes]]:
    files = make_files(seed, count=10)
    with repo.open_writer("t", pack_size=20_000) as w:
        point = w.save_restore_point(share="s", root=store_files(repo, w, files))
    return point.id, files


def _pack_count(repo_url: str) -> int:
    return sum(1 for p in (Path(repo_url) / "data").rglob("*") if p.is_file())


def _unique_blobs(
    repo: Repository, mine: dict[bytes, bytes], other: dict[bytes, bytes]
) -> list[bytes]:
    theirs = {repo.blob_id(c.data) for d in other.values() for c in repo.chunker().cut_buf(d)}
    ours = {repo.blob_id(c.data) for d in mine.values() for c in repo.chunker().cut_buf(d)}
    return sorted(ours - theirs)


def test_gc_removes_unreferenced_data_in_two_runs(repo: Repository, repo_url: str) -> None:
    old_id, old_files = _backup(repo, 1)
    keep_id, keep_files = _backup(repo, 2)
    unique = _unique_blobs(repo, old_files, keep_files)
    before = _pack_count(repo_url)
    assert repo.gc(grace=0).condemned_packs == 0  # everything is referenced
    repo.delete_restore_point(old_id)
    first = repo.gc(grace=0)
    assert first.condemned_packs > 0 and first.deleted_packs == 0
    assert _pack_count(repo_url) == before  # phase 1 deletes nothing
    second = repo.gc(grace=0)
    assert second.swept_generations == [first.marked_generation]
    assert second.deleted_packs == first.condemned_packs
    assert _pack_count(repo_url) < before
    gone = 0
    for blob_id in unique:
        try:
            repo.get_blob(blob_id)
        except BlobNotFound:
            gone += 1
    assert gone > 0
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert read_files(repo, repo.load_restore_point(keep_id).root) == keep_files


def test_sweep_waits_for_writers_alive_at_mark(repo: Repository) -> None:
    old_id, old_files = _backup(repo, 1)
    writer = repo.open_writer("slow backup")  # started before the mark: did not see it
    repo.delete_restore_point(old_id)
    mark = repo.gc(grace=0)
    assert mark.condemned_packs > 0
    waiting = repo.gc(grace=0)
    assert waiting.waiting_generations == [mark.marked_generation] and waiting.deleted_packs == 0
    # The slow writer still believes the old blobs exist and references them.
    root = store_files(repo, writer, old_files)
    point = writer.save_restore_point(share="s", root=root)
    writer.close()
    swept = repo.gc(grace=0)
    assert swept.swept_generations == [mark.marked_generation]
    assert swept.reprieved_packs > 0
    assert read_files(repo, repo.load_restore_point(point.id).root) == old_files
    assert repo.check(read_data=True).ok


def test_writer_started_after_mark_reuploads_condemned_blobs(repo: Repository) -> None:
    old_id, old_files = _backup(repo, 1)
    repo.delete_restore_point(old_id)
    assert repo.gc(grace=0).condemned_packs > 0
    some = next(iter(old_files.values()))
    blob = next(iter(repo.chunker().cut_buf(some))).data
    with repo.open_writer("new") as w:
        assert not w.has_blob(repo.blob_id(blob))
        assert w.has_blobs([repo.blob_id(blob)]) == set()  # condemned: not referenced
        assert w.add_blob(KIND_DATA, repo.blob_id(blob), blob) is True
        point = w.save_restore_point(share="s", root=store_files(repo, w, old_files))
    report = repo.gc(grace=0)
    assert report.deleted_packs > 0
    assert read_files(repo, repo.load_restore_point(point.id).root) == old_files
    assert repo.check(read_data=True).ok


def test_writer_trusts_the_blobs_of_existing_points_only_while_no_gc_is_pending(
    repo: Repository,
) -> None:
    """trusts_points (reused blobs referenced without a per-blob has_blob) holds only
    for points that still exist after the lease, and never while a generation is
    condemned but not swept."""
    kept_id, _ = _backup(repo, 1)
    gone_id, _ = _backup(repo, 2)
    with repo.open_writer("t") as w:
        assert w.trusts_points([kept_id, gone_id])
        assert not w.trusts_points([])
        repo.delete_restore_point(gone_id)  # forgotten after find_parents listed it
        assert not w.trusts_points([kept_id, gone_id])
        assert w.trusts_points([kept_id])
    assert repo.gc(grace=0).condemned_packs > 0
    with repo.open_writer("t") as w:
        assert not w.trusts_points([kept_id])  # the sweep is pending: ask has_blob
    repo.gc(grace=0)  # sweep
    with repo.open_writer("t") as w:
        assert w.trusts_points([kept_id])


def test_expired_lease_of_a_dead_writer_no_longer_blocks(repo: Repository) -> None:
    old_id, _ = _backup(repo, 1)
    dead = WriterLease(repo.backend, repo.keys.encryption, "ab" * 16, "crashed", timeout=0.3)
    dead.acquire()
    dead._stop.set()  # the process "dies": no more refreshes, lease never deleted
    repo.delete_restore_point(old_id)
    mark = repo.gc(grace=0)
    assert mark.condemned_packs > 0
    time.sleep(0.4)
    swept = repo.gc(grace=0)
    assert swept.deleted_packs == mark.condemned_packs
    assert swept.leases_removed == 1
    assert repo.check().ok


def test_unindexed_leftovers_of_a_crash_are_collected(repo: Repository, repo_url: str) -> None:
    _backup(repo, 1)
    w = repo.open_writer("crashing", pack_size=1000)
    w._write_segment = lambda: None  # type: ignore[method-assign]  # dies before its segment
    data = b"orphan" * 1000
    w.add_blob(KIND_DATA, repo.blob_id(data), data)
    with w._lock:
        w._close(KIND_DATA)
        (leftover,) = w._take_ready()
    w._submit(leftover)
    w._pool.shutdown(wait=True)
    w._lease._stop.set()
    w._lease.backend.delete(w._lease.object_name)  # as if its lease expired
    packs = _pack_count(repo_url)
    assert any("not indexed" in warning for warning in repo.check().warnings)
    assert repo.gc(grace=0).condemned_packs == 1
    assert repo.gc(grace=0).deleted_packs == 1
    assert _pack_count(repo_url) == packs - 1
    assert repo.check().ok and not repo.check().warnings


def test_writer_refuses_to_publish_after_its_lease_lapsed(repo: Repository) -> None:
    w = repo.open_writer("stalled", lease_timeout=0.2)
    w._lease._stop.set()
    time.sleep(0.3)
    data = b"late" * 100
    w.add_blob(KIND_DATA, repo.blob_id(data), data)
    with pytest.raises(LeaseExpired, match="could not be refreshed"):
        w.save_restore_point(share="s", root=repo.blob_id(data))
    w.close(flush=False)
    assert repo.list_restore_points() == []


def test_mostly_dead_packs_are_repacked(repo: Repository, repo_url: str) -> None:
    files_a, files_b = make_files(1, count=12), make_files(2, count=3)
    with repo.open_writer("t", pack_size=400_000) as w:  # A and B share packs
        root_a = store_files(repo, w, files_a)
        root_b = store_files(repo, w, files_b)
        point_a = w.save_restore_point(share="a", root=root_a)
        point_b = w.save_restore_point(share="b", root=root_b)
    repo.delete_restore_point(point_a.id)
    size_before = sum(p.stat().st_size for p in (Path(repo_url) / "data").rglob("*"))
    mark = repo.gc(grace=0, repack_below=0.9)
    assert mark.repacked_packs > 0 and mark.repacked_blobs > 0
    swept = repo.gc(grace=0)
    assert swept.deleted_packs > 0
    size_after = sum(p.stat().st_size for p in (Path(repo_url) / "data").rglob("*"))
    assert size_after < size_before
    assert read_files(repo, repo.load_restore_point(point_b.id).root) == files_b
    assert repo.check(read_data=True).ok


def test_other_proxies_drop_cached_tree_packs_after_gc(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    from ferryman.repository import open_backend

    from .conftest import PASSPHRASE

    with repo.open_writer("t") as w:  # shares nothing with the kept point
        root = store_files(repo, w, make_files(1, count=10, shared=0))
        old_id = w.save_restore_point(share="s", root=root).id
    keep_id, keep_files = _backup(repo, 2)
    proxy = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "proxy")
    read_files(proxy, proxy.load_restore_point(old_id).root)
    cached_before = {p.name for p in (proxy.cache_path / "packs").iterdir()}
    repo.delete_restore_point(old_id)
    repo.gc(grace=0)
    assert repo.gc(grace=0).deleted_packs > 0
    proxy.sync_index()
    cached_after = {p.name for p in (proxy.cache_path / "packs").iterdir()}
    assert cached_after < cached_before
    assert read_files(proxy, proxy.load_restore_point(keep_id).root) == keep_files
    proxy.close()


def test_gc_refuses_to_guess_when_a_tree_is_missing(repo: Repository, repo_url: str) -> None:
    from ferryman.repository.errors import IncompleteRepository

    _backup(repo, 1)
    for tree_pack in (Path(repo_url) / "tree").rglob("*"):
        if tree_pack.is_file():
            tree_pack.unlink()
    for cached in (repo.cache_path / "packs").iterdir():
        cached.unlink()
    packs = _pack_count(repo_url)
    with pytest.raises(IncompleteRepository, match="cannot be read"):
        repo.gc(grace=0)
    assert _pack_count(repo_url) == packs
    assert not (Path(repo_url) / "gc").exists()  # nothing was condemned


def test_gc_stops_when_a_reachable_blob_is_not_indexed(repo: Repository, repo_url: str) -> None:
    from ferryman.repository.errors import IncompleteRepository

    from .conftest import PASSPHRASE

    _backup(repo, 1)
    # Lose the index segments, keep the packs: everything looks unreferenced.
    for segment in (Path(repo_url) / "index").iterdir():
        segment.unlink()
    from ferryman.repository import open_backend

    with Repository.open(open_backend(repo_url), PASSPHRASE) as fresh:
        with pytest.raises(IncompleteRepository):
            fresh.gc(grace=0)
        assert fresh.rebuild_index() > 0
        assert fresh.gc(grace=0).condemned_packs == 0
        assert fresh.check(read_data=True).ok


def test_many_index_segments_are_consolidated(repo: Repository, repo_url: str) -> None:
    for seed in range(6):
        _backup(repo, seed)
    segments = len(list((Path(repo_url) / "index").iterdir()))
    assert segments >= 6
    report = repo.gc(grace=0, consolidate_above=3)
    assert report.segments_deleted == segments and report.segments_written == 1
    assert repo.check(read_data=True).ok


def test_consolidation_streams_segments_with_every_entry(
    repo: Repository, repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(4):
        _backup(repo, seed)
    copied = next(e for e in repo.index_cache.iter_entries() if e.kind == KIND_DATA)
    with repo.open_writer("t") as w:  # the same blob in a second pack, as two writers leave it
        w.add_blob(KIND_DATA, copied.blob_id, repo.get_blob(copied.blob_id), force=True)
    assert len(repo.index_cache.locations(copied.blob_id)) == 2
    before = sorted(repo.index_cache.iter_entries())
    monkeypatch.setattr(index, "MAX_ENTRIES_PER_SEGMENT", len(before) // 3 + 1)
    report = repo.gc(grace=0, consolidate_above=1, do_mark=False)
    assert report.segments_written == 3  # encoded as read, a segment per batch
    written = []
    for name in repo.backend.list(index.INDEX_PREFIX):
        _, entries = index.open_segment(repo.keys.encryption, repo.backend.get(name), name)
        segment = list(entries)
        ids = [e.blob_id for e in segment]
        assert ids == sorted(ids)  # docs/format.md: entries sorted by blob id
        written += segment
    assert sorted(written) == before  # each entry exactly once: none lost, none doubled
    fresh = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "cold")
    try:
        fresh.sync_index()
        assert sorted(fresh.index_cache.iter_entries()) == before
        assert fresh.check(read_data=True).ok
    finally:
        fresh.close()


def test_sorted_segment_encoding_is_the_segment_format() -> None:
    ids = sorted(bytes([i]) * 32 for i in range(5))
    packs = [b"\x01" * 16, b"\x02" * 16]
    entries = [
        IndexEntry(bid, packs[(i + j) % 2], 10 * i, 7, 9, 1, KIND_DATA)
        for i, bid in enumerate(ids)
        for j in range(1 + i % 2)  # some blobs in both packs, in (id, pack) order
    ]
    entries.sort(key=lambda e: (e.blob_id, e.pack_id))
    plain, count = index.encode_sorted_segment(iter(entries))
    assert count == len(entries) and plain == index.encode_segment(entries)
    assert list(index.decode_segment(plain, "s")[1]) == entries
    used = list(dict.fromkeys(e.pack_id for e in entries))  # pack list in order of first use
    rows = [struct.pack("<32sIIIIBB", e.blob_id, used.index(e.pack_id), *e[2:]) for e in entries]
    spec = [b"FRMI", struct.pack("<I", len(used)), *used, struct.pack("<I", count), *rows]
    assert plain == b"".join(spec)  # docs/format.md section 8, byte for byte


class _Killed(Exception):
    """Stands for the gc process dying at that call."""


@pytest.mark.parametrize("step", ["put", "delete"])
def test_consolidation_killed_midway_loses_no_entry(
    repo: Repository,
    repo_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    for seed in range(3):
        _backup(repo, seed)
    before = sorted(repo.index_cache.iter_entries())
    monkeypatch.setattr(index, "MAX_ENTRIES_PER_SEGMENT", len(before) // 3 + 1)
    real = getattr(repo.backend, step)
    calls = 0

    def dies_at_the_second_segment(name: str, *args: bytes) -> None:
        nonlocal calls
        calls += name.startswith(index.INDEX_PREFIX)
        if calls == 2:  # "put": one new segment written; "delete": all, one old one deleted
            raise _Killed(name)
        real(name, *args)

    monkeypatch.setattr(repo.backend, step, dies_at_the_second_segment)
    with pytest.raises(_Killed):
        repo.gc(grace=0, consolidate_above=1, do_mark=False)
    fresh = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "cold")
    try:
        fresh.sync_index()
        assert sorted(fresh.index_cache.iter_entries()) == before  # old and new segments
        assert fresh.check(read_data=True).ok
        report = fresh.gc(grace=0, consolidate_above=1, do_mark=False)  # the next run finishes
        assert report.segments_written == 3
        assert len(list(fresh.backend.list(index.INDEX_PREFIX))) == 3
        assert sorted(fresh.index_cache.iter_entries()) == before
        assert fresh.check(read_data=True).ok
    finally:
        fresh.close()


def test_consolidation_keeps_the_segment_a_writer_adds_meanwhile(
    repo: Repository, repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(3):
        _backup(repo, seed)
    other = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "other")
    real_sync = repo.sync_index
    late: list[tuple[str, dict[bytes, bytes]]] = []
    segments: set[str] = set()

    def sync_then_a_writer_finishes() -> int:
        merged = real_sync()
        if not late:  # the sync before consolidating: the writer's segments come after it
            segments.update(repo.backend.list(index.INDEX_PREFIX))
            late.append(_backup(other, 7))
            segments.symmetric_difference_update(repo.backend.list(index.INDEX_PREFIX))
        return merged

    try:
        monkeypatch.setattr(repo, "sync_index", sync_then_a_writer_finishes)
        report = repo.gc(grace=0, consolidate_above=1, do_mark=False, do_sweep=False)
        assert late and report.segments_written == 1
        listed = set(repo.backend.list(index.INDEX_PREFIX))
        assert segments < listed and len(listed) == len(segments) + 1  # kept; the rest merged
        fresh = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "cold")
        try:
            point_id, files = late[0]
            assert read_files(fresh, fresh.load_restore_point(point_id).root) == files
            assert fresh.check(read_data=True).ok
        finally:
            fresh.close()
    finally:
        other.close()
