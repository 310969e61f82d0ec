"""add_compressed_blob: blobs compressed by another process, stored like add_blob's."""

from __future__ import annotations

import os
import random
import threading

import pytest

from ferryman.repository import KIND_DATA, Repository
from ferryman.repository.compression import COMPRESSION_NONE, COMPRESSION_ZSTD, compress_body


def test_compressed_elsewhere_reads_back_and_deduplicates(repo: Repository) -> None:
    text, noise = b"compressible text " * 2000, os.urandom(20_000)
    with repo.open_writer("t") as w:
        for data in (text, noise):
            method, body = compress_body(data, w.compression_level)
            bid = repo.blob_id(data)
            assert w.add_compressed_blob(KIND_DATA, bid, method, bytes(body), len(data))
            assert not w.add_compressed_blob(KIND_DATA, bid, method, bytes(body), len(data))
            assert not w.add_blob(KIND_DATA, bid, data)  # one store, whichever call
        assert w.stats["blobs_new"] == 2 and w.stats["blobs_dedup"] == 4
        assert w.stats["bytes_raw"] == len(text) + len(noise)
        assert w.stats["bytes_stored"] < len(text) // 10 + len(noise) + 200
    assert repo.get_blob(repo.blob_id(text)) == text
    assert repo.get_blob(repo.blob_id(noise)) == noise
    entry = repo.index_cache.locations(repo.blob_id(text))[0]
    assert entry.compression == COMPRESSION_ZSTD and entry.raw_length == len(text)


def test_bad_arguments_are_refused_before_anything_is_claimed(repo: Repository) -> None:
    data = b"x" * 1000
    bid = repo.blob_id(data)
    with repo.open_writer("t") as w:
        with pytest.raises(ValueError, match="compression method"):
            w.add_compressed_blob(KIND_DATA, bid, 7, data, len(data))
        with pytest.raises(ValueError, match="raw length"):
            w.add_compressed_blob(KIND_DATA, bid, COMPRESSION_NONE, data, len(data) + 1)
        assert w.add_compressed_blob(KIND_DATA, bid, COMPRESSION_NONE, data, len(data))
    assert repo.get_blob(bid) == data


def test_threads_racing_on_the_same_blobs_store_each_once(repo: Repository) -> None:
    """Thread-safe like add_blob: threads adding the same ids at once (half through
    add_compressed_blob, half through add_blob) store every blob exactly once."""
    blobs = [b"blob %d " % i * (50 + i * 37) for i in range(40)]
    ids = [repo.blob_id(b) for b in blobs]
    stored: list[bytes] = []
    start = threading.Barrier(8)

    with repo.open_writer("t") as w:

        def work(n: int) -> None:
            order = random.Random(n).sample(range(len(blobs)), len(blobs))
            start.wait()
            for i in order:
                if (n + i) % 2:
                    method, body = compress_body(blobs[i], w.compression_level)
                    new = w.add_compressed_blob(
                        KIND_DATA, ids[i], method, bytes(body), len(blobs[i])
                    )
                else:
                    new = w.add_blob(KIND_DATA, ids[i], blobs[i])
                if new:
                    stored.append(ids[i])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(stored) == sorted(ids)
        assert w.stats["blobs_new"] == 40 and w.stats["blobs_dedup"] == 7 * 40
        assert w.stats["bytes_raw"] == sum(len(b) for b in blobs)
    for bid, data in zip(ids, blobs, strict=True):
        assert repo.get_blob(bid) == data
        assert len(repo.index_cache.locations(bid)) == 1
