"""Blob payload compression: every method round-trips, old payloads stay readable,
incompressible data is stored raw, and hostile bodies are refused cleanly."""

from __future__ import annotations

import os
import random
import threading

import pytest
import zstandard

from ferryman.repository import compression
from ferryman.repository.compression import (
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    compress,
    compress_body,
    decompress,
)
from ferryman.repository.errors import CorruptObject

LIMIT = 16 << 20
TEXT = b"".join(
    b"line %d: the quick brown fox jumps over the lazy dog, id=%08x\n"
    % (i, random.Random(i).getrandbits(32))
    for i in range(40_000)
)

# A payload written by the level-3 writer before its match tables were tuned
# (compression.py at a21cfe6): readers must keep reading what older writers stored.
OLD_DATA = b"Ferryman fixture: a payload written by the level-3 writer of 2026-11-30.\n" * 40
OLD_PAYLOAD = bytes.fromhex(
    "0128b52ffd60680a5d020042840f1680ab0e402c651bcfff1039670006deb8741736e838274080d6"
    "49e9080a293368fd3aeecb9d7fac63e1f7dda68c8d842e66e2f47055b669cc2f91a87a22020038c6"
    "041f4485b907"
)


@pytest.mark.parametrize(
    ("data", "method"),
    [
        (b"", COMPRESSION_NONE),
        (b"tiny", COMPRESSION_NONE),
        (os.urandom(5000), COMPRESSION_NONE),  # small: compressed once, kept raw
        (os.urandom(300_000), COMPRESSION_NONE),  # large: the probe says no
        (TEXT[:3000], COMPRESSION_ZSTD),
        (TEXT[: 64 * 1024], COMPRESSION_ZSTD),
        (TEXT[:1_500_000], COMPRESSION_ZSTD),
        (bytes(4 << 20), COMPRESSION_ZSTD),  # a zero run: the largest chunk size
    ],
    ids=[
        "empty",
        "tiny",
        "small-random",
        "large-random",
        "small-text",
        "64k-text",
        "chunk-text",
        "zeros",
    ],
)
def test_every_method_round_trips(data: bytes, method: int) -> None:
    payload = compress(data)
    assert payload[0] == method
    if method == COMPRESSION_NONE:
        assert payload[1:] == data  # stored as is, never grown beyond the method byte
    else:
        assert len(payload) < 0.97 * len(data)
        # the format requires the frame to record its content size (docs/format.md §6)
        assert zstandard.frame_content_size(payload[1:]) == len(data)
    assert decompress(payload, len(data), LIMIT, "blob") == data
    assert compress_body(data) == (method, payload[1:])


@pytest.mark.parametrize("level", [1, 2, 3, 5, 19])
def test_every_level_round_trips_and_records_the_size(level: int) -> None:
    data = TEXT[:400_000]
    method, body = compress_body(data, level)
    assert method == COMPRESSION_ZSTD and len(body) < len(data) / 2
    assert zstandard.frame_content_size(bytes(body)) == len(data)
    assert decompress(bytes((method,)) + bytes(body), len(data), LIMIT, "blob") == data


def test_level_zero_stores_raw() -> None:
    assert compress_body(TEXT[:100_000], 0) == (COMPRESSION_NONE, TEXT[:100_000])


def test_payloads_of_older_writers_are_read() -> None:
    assert decompress(OLD_PAYLOAD, len(OLD_DATA), LIMIT, "old blob") == OLD_DATA
    # frames from any zstd encoder settings decode alike: plain level 3 (the old
    # writer), other levels, a checksum, a long window
    data = TEXT[:1_200_000]
    for comp in (
        zstandard.ZstdCompressor(level=3, write_content_size=True),
        zstandard.ZstdCompressor(level=1, write_content_size=True),
        zstandard.ZstdCompressor(level=9, write_content_size=True, write_checksum=True),
        zstandard.ZstdCompressor(
            compression_params=zstandard.ZstdCompressionParameters(
                compression_level=3, window_log=24, write_content_size=1
            )
        ),
    ):
        payload = bytes((COMPRESSION_ZSTD,)) + comp.compress(data)
        assert decompress(payload, len(data), LIMIT, "blob") == data


def test_tuned_level_compresses_like_plain_level_3() -> None:
    """The smaller match tables cost little ratio (decision 0012: 0.1-0.2 % on the
    reference share); a regression to a much weaker setting shows here."""
    data = TEXT[:2_000_000]
    plain = zstandard.ZstdCompressor(level=3).compress(data)
    _, tuned = compress_body(data, 3)
    assert len(tuned) <= 1.03 * len(plain)


def test_probe_finds_text_anywhere_in_a_random_chunk() -> None:
    """Text filling one eighth of a random chunk (a VM image's blocks) is compressed,
    wherever that eighth sits."""
    size = 1 << 20
    for eighth in range(8):
        block = bytearray(os.urandom(size))
        block[eighth * size // 8 : (eighth + 1) * size // 8] = TEXT[: size // 8]
        assert compression.looks_compressible(block), eighth
        method, body = compress_body(block)
        assert method == COMPRESSION_ZSTD and len(body) < 0.95 * size
    assert not compression.looks_compressible(os.urandom(size))


def test_compressors_are_per_thread() -> None:
    """Writers compress from several threads (and processes) at once."""
    chunks = [TEXT[i * 200_000 : (i + 1) * 200_000] for i in range(8)]
    results: dict[int, tuple[int, bytes]] = {}

    def work(i: int) -> None:
        method, body = compress_body(chunks[i])
        results[i] = (method, bytes(body))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (method, body) in results.items():
        payload = bytes((method,)) + body
        assert decompress(payload, len(chunks[i]), LIMIT, "blob") == chunks[i]


def test_level_3_frames_use_the_tuned_match_tables() -> None:
    """Level 3 encodes with decision 0012's tables (2^16 hash, 2^14 chain), not the
    level's own: its frames equal those of an encoder set so, and differ from plain
    level 3's (the ratio test above passes either way)."""

    def encoder(**tables: int) -> bytes:
        params = zstandard.ZstdCompressionParameters(
            compression_level=3, write_content_size=1, **tables
        )
        return zstandard.ZstdCompressor(compression_params=params).compress(data)

    data = TEXT[:1_000_000]
    _, body = compress_body(data, 3)
    assert bytes(body) == encoder(hash_log=16, chain_log=14)
    assert bytes(body) != encoder()


def _frame(data: bytes, write_content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=write_content_size).compress(data)


@pytest.mark.parametrize(
    ("payload", "expected", "message"),
    [
        (b"", 10, "empty payload"),
        (b"\x07abc", 3, "unknown compression method 7"),
        (b"\x01not a zstd frame at all", 10, "bad zstd frame header"),
        (b"\x01" + _frame(TEXT[:5000], write_content_size=False), 5000, "without content size"),
        (b"\x01" + _frame(TEXT[:5000])[:-20], 5000, "damaged"),
        (b"\x01" + _frame(TEXT[:5000]), 4999, "index says 4999"),
        (b"\x00" + TEXT[:100], 99, "index says 99"),
    ],
    ids=["empty", "method", "garbage", "no-size", "truncated", "size-lie", "raw-size"],
)
def test_hostile_payloads_are_corrupt_objects(payload: bytes, expected: int, message: str) -> None:
    with pytest.raises(CorruptObject, match=message) as info:
        decompress(payload, expected, LIMIT, "blob 00ff")
    assert str(info.value).startswith("blob 00ff: ")
    assert "\n" not in str(info.value)


def test_a_frame_claiming_more_than_the_limit_is_refused_before_allocating() -> None:
    # magic, a descriptor (single segment, 8-byte content size) claiming 2^40 bytes
    claim = bytes.fromhex("28b52ffd") + bytes([0xE0]) + (1 << 40).to_bytes(8, "little")
    assert zstandard.frame_content_size(claim) == 1 << 40
    with pytest.raises(CorruptObject, match="more than the limit"):
        decompress(b"\x01" + claim, None, LIMIT, "blob")


def test_a_frame_whose_content_exceeds_its_header_is_refused() -> None:
    """A frame whose header understates its content must not decode past that size."""
    real = _frame(TEXT[:20_000])
    assert zstandard.frame_content_size(real) == 20_000
    small = _frame(TEXT[:100])
    # splice the short frame's header onto the long frame's blocks
    short_header = small[: zstandard.frame_header_size(small)]
    lying = short_header + real[zstandard.frame_header_size(real) :]
    with pytest.raises(CorruptObject):
        decompress(b"\x01" + lying, 100, LIMIT, "blob")
