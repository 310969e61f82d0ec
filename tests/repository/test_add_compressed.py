"""add_compressed_blob: blobs compressed by another process, stored like add_blob's."""

from __future__ import annotations

import os

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
