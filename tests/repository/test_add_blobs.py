"""add_blobs / add_compressed_blobs: a batch of blobs stored with one call, as add_blob would."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ferryman.repository import (
    KIND_DATA,
    Repository,
    RepositoryError,
    compression,
    open_backend,
    pack,
)
from ferryman.repository.compression import COMPRESSION_NONE, compress_body
from ferryman.repository.writer import SESSION_INSERT_ROWS

from .conftest import PASSPHRASE


def _blobs(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        b"file %d " % i * rng.randint(1, 300) + rng.randbytes(rng.randint(0, 900)) for i in range(n)
    ]


def test_batches_store_each_blob_once_across_packs_and_read_back(repo: Repository) -> None:
    """More ids than one scratch-table insert holds, packs smaller than a batch, repeated
    ids inside a batch and ids of earlier batches: each blob is stored exactly once."""
    blobs = _blobs(SESSION_INSERT_ROWS * 2 + 100, seed=1)
    ids = [repo.blob_id(b) for b in blobs]
    with repo.open_writer("t", pack_size=64 << 10) as w:
        first = w.add_blobs(KIND_DATA, list(zip(ids, blobs, strict=True)), checked=True)
        assert all(first)
        # again, shuffled, each twice in the same call: all deduplicated
        again = [(ids[i], blobs[i]) for i in random.Random(2).sample(range(len(ids)), 300)] * 2
        assert not any(w.add_blobs(KIND_DATA, again, checked=True))
        assert not w.add_blob(KIND_DATA, ids[0], blobs[0])
        # a new blob repeated in one call is stored once, the repeat reported as a duplicate
        extra = b"one more blob" * 50
        assert w.add_blobs(KIND_DATA, [(repo.blob_id(extra), extra)] * 2) == [True, False]
        assert w.stats["blobs_new"] == len(blobs) + 1
        assert w.stats["blobs_dedup"] == 600 + 1 + 1
        assert w.stats["bytes_raw"] == sum(map(len, blobs)) + len(extra)
    packs = {loc.pack_id for bid in ids for loc in repo.index_cache.locations(bid)}
    assert len(packs) > 3  # the batch spanned several packs
    for bid, data in zip(ids, blobs, strict=True):
        assert repo.get_blob(bid) == data
        assert len(repo.index_cache.locations(bid)) == 1
    assert repo.get_blob(repo.blob_id(extra)) == extra


def test_threads_racing_with_batches_and_single_adds_store_each_once(repo: Repository) -> None:
    blobs = _blobs(300, seed=3)
    ids = [repo.blob_id(b) for b in blobs]
    stored: list[bytes] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    with repo.open_writer("t", pack_size=128 << 10) as w:

        def work(n: int) -> None:
            order = random.Random(n).sample(range(len(blobs)), len(blobs))
            start.wait()
            for s in range(0, len(order), 37):
                part = order[s : s + 37]
                if n % 3 == 0:
                    new = [w.add_blob(KIND_DATA, ids[i], blobs[i]) for i in part]
                elif n % 3 == 1:
                    new = w.add_blobs(KIND_DATA, [(ids[i], blobs[i]) for i in part])
                else:
                    bodies = [(ids[i], *compress_body(blobs[i], 3), len(blobs[i])) for i in part]
                    new = w.add_compressed_blobs(KIND_DATA, bodies)
                with lock:
                    stored.extend(ids[i] for i, ok in zip(part, new, strict=True) if ok)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(stored) == sorted(ids)
        assert w.stats["blobs_new"] == len(blobs) and w.stats["blobs_dedup"] == 5 * len(blobs)
    for bid, data in zip(ids, blobs, strict=True):
        assert repo.get_blob(bid) == data


def test_a_bad_compressed_batch_is_refused_before_anything_is_claimed(repo: Repository) -> None:
    good, other = b"good blob " * 100, b"other blob " * 100
    gid, oid = repo.blob_id(good), repo.blob_id(other)
    with repo.open_writer("t") as w:
        bad = [(gid, COMPRESSION_NONE, good, len(good)), (oid, 9, other, len(other))]
        with pytest.raises(ValueError, match="compression method"):
            w.add_compressed_blobs(KIND_DATA, bad)
        with pytest.raises(ValueError, match="32 bytes"):
            w.add_blobs(KIND_DATA, [(gid, good), (b"short", other)])
        assert w.add_blobs(KIND_DATA, [(gid, good), (oid, other)]) == [True, True]
    assert repo.get_blob(gid) == good and repo.get_blob(oid) == other


def test_record_nonces_are_distinct_and_a_forked_child_draws_its_own(repo: Repository) -> None:
    blobs = _blobs(600, seed=4)
    ids = [repo.blob_id(b) for b in blobs]
    with repo.open_writer("t") as w:
        w.add_blobs(KIND_DATA, list(zip(ids, blobs, strict=True)))
    nonces = []
    for bid in ids:
        [loc] = repo.index_cache.locations(bid)
        data = repo.backend.get(pack.pack_name(KIND_DATA, loc.pack_id.hex()))
        nonces.append(data[loc.offset : loc.offset + 12])
    assert len(set(nonces)) == len(nonces)

    builder = pack.PackBuilder(os.urandom(32), KIND_DATA)
    entry = builder.reserve(ids[0], KIND_DATA, 1 + 10, 10, COMPRESSION_NONE)
    builder.write(entry, b"0123456789")  # this thread's nonce pool is now filled
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a nonce from its own draw, never the parent's next one
        os.write(write_end, pack._nonces.take())
        os._exit(0)
    os.close(write_end)
    child_nonce = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_nonce) == 12 and child_nonce != pack._nonces.take()


def test_a_flush_waits_for_a_blob_another_thread_deduplicated_against_while_it_was_stored(
    repo: Repository, repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread A claims a chunk and is still compressing it when thread B meets the same
    chunk (deduplicated against A's claim: B's file references it) and a checkpoint
    flushes. The flush must not publish before A's blob is in a pack: a crash right
    after would leave a checkpoint naming a blob that no pack holds."""
    data = b"shared chunk " * 1000
    blob_id = repo.blob_id(data)
    compressing, release = threading.Event(), threading.Event()
    real = compression.compress_body

    def slow(body: bytes | bytearray | memoryview, level: int = 3) -> tuple[int, Any]:
        if bytes(body[:13]) == b"shared chunk ":
            compressing.set()
            assert release.wait(20)
        return real(body, level)

    monkeypatch.setattr(compression, "compress_body", slow)
    found_when_flushed: list[bool] = []
    with repo.open_writer("t") as w:

        def checkpoint() -> None:
            w.flush()
            reader = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "r")
            try:
                reader.sync_index()
                found_when_flushed.append(bool(reader.index_cache.locations(blob_id)))
            finally:
                reader.close()

        claimant = threading.Thread(target=w.add_blob, args=(KIND_DATA, blob_id, data))
        claimant.start()
        assert compressing.wait(20)
        assert not w.add_blob(KIND_DATA, blob_id, data)  # B: deduplicated against the claim
        assert w.has_blob(blob_id)
        flusher = threading.Thread(target=checkpoint)
        flusher.start()
        flusher.join(0.5)
        assert flusher.is_alive()  # still waiting for A's blob
        release.set()
        claimant.join(20)
        flusher.join(20)
    assert found_when_flushed == [True]
    assert repo.get_blob(blob_id) == data


class _FailingScratch:
    """The writer's scratch connection whose statements starting with ``verb`` fail."""

    def __init__(self, conn: sqlite3.Connection, verb: str) -> None:
        self._conn = conn
        self._verb = verb

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql.startswith(self._verb):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, params)


def _flush_outcome(w: Any) -> BaseException:
    """What a flush (a checkpoint) raises; fails if it is still waiting after 10 s."""
    outcome: list[BaseException] = []

    def checkpoint() -> None:
        try:
            w.flush()
        except BaseException as exc:
            outcome.append(exc)

    flusher = threading.Thread(target=checkpoint, daemon=True)
    flusher.start()
    flusher.join(10)
    assert not flusher.is_alive(), "flush waits for ever for claims nobody stores"
    assert len(outcome) == 1
    return outcome[0]


def test_a_failed_scratch_insert_fails_the_writer_instead_of_hanging_its_flush(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claims written to the scratch table in one statement fail there: the batch
    that triggered it stores nothing, so a later flush (a checkpoint) must fail at once
    instead of waiting for ever for those claims to be stored."""
    blobs = _blobs(SESSION_INSERT_ROWS, seed=5)
    ids = [repo.blob_id(b) for b in blobs]
    w = repo.open_writer("t")
    try:
        monkeypatch.setattr(w, "_session", _FailingScratch(w._session, "INSERT"))
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            w.add_blobs(KIND_DATA, list(zip(ids, blobs, strict=True)))
        failed = _flush_outcome(w)
        assert isinstance(failed, RepositoryError) and "disk is full" in str(failed)
        with pytest.raises(RepositoryError, match="writer failed earlier"):
            w.add_blob(KIND_DATA, ids[0], blobs[0])
    finally:
        w.close(flush=False)


def test_a_lookup_failing_mid_batch_fails_the_writer_the_batch_claims_being_unstored(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's first id is claimed, the scratch-table lookup of its second fails: the
    first is never stored though the session lists it (another thread would reference
    it), so the writer fails and a flush says so instead of waiting for ever."""
    blobs = _blobs(SESSION_INSERT_ROWS + 1, seed=6)
    ids = [repo.blob_id(b) for b in blobs]
    w = repo.open_writer("t")
    try:
        # the first SESSION_INSERT_ROWS ids are in the scratch table (looked up by SELECT)
        assert all(w.add_blobs(KIND_DATA, list(zip(ids[:-1], blobs[:-1], strict=True))))
        monkeypatch.setattr(w, "_session", _FailingScratch(w._session, "SELECT"))
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            w.add_blobs(KIND_DATA, [(ids[-1], blobs[-1]), (ids[0], blobs[0])], checked=True)
        failed = _flush_outcome(w)
        assert isinstance(failed, RepositoryError) and "disk is full" in str(failed)
    finally:
        w.close(flush=False)


def test_a_pack_holding_a_record_whose_write_failed_is_neither_uploaded_nor_indexed(
    repo: Repository, repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record's write fails (say the encryption raised) in a batch that filled its pack:
    the pack, ready once the batch lets go of it, would list a blob that cannot be read.
    Indexed, every later session would deduplicate against it; left unindexed, a resumed
    task would adopt it. It must not reach the repository at all."""
    blobs = _blobs(60, seed=5)
    ids = [repo.blob_id(b) for b in blobs]
    bad = ids[30]  # mid-batch: the records placed after it fill its pack
    real_write_many = pack.PackBuilder.write_many

    def write_many(self: pack.PackBuilder, placed: list[tuple[pack.PackEntry, Any]]) -> None:
        for i, (entry, _) in enumerate(placed):
            if entry.blob_id == bad:  # the records before it are written, then it fails
                if i:
                    real_write_many(self, placed[:i])
                raise OSError(5, "Input/output error")
        real_write_many(self, placed)

    monkeypatch.setattr(pack.PackBuilder, "write_many", write_many)
    with pytest.raises(OSError), repo.open_writer("t", pack_size=16 << 10) as w:
        w.add_blobs(KIND_DATA, list(zip(ids, blobs, strict=True)), checked=True)
    reader = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "r")
    try:
        reader.sync_index()
        assert not reader.index_cache.locations(bad)
        report = reader.check(read_data=True)
        assert report.ok, report.errors  # no stored pack holds the broken record
        stored = [b for b in ids if reader.index_cache.locations(b)]
        for blob_id in stored:  # what was published before the failure reads back
            assert reader.get_blob(blob_id) == blobs[ids.index(blob_id)]
    finally:
        reader.close()
