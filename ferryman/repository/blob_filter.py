"""A fixed-size Bloom filter over blob ids (which are already uniform keyed hashes).

Used in front of SQLite lookups to answer "certainly not seen" without a query.
Its memory is fixed (default 2 MiB) whatever the number of ids: past its design
size it only answers "maybe" more often, and the caller then asks SQLite.
"""

from __future__ import annotations

import struct
import threading

DEFAULT_BITS = 1 << 24
HASHES = 4
_FOUR_U64 = struct.Struct("<4Q")


class BlobFilter:
    """Set membership with false positives only; thread-safe."""

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        if bits & (bits - 1) or bits < 64:
            raise ValueError("bits must be a power of two >= 64")
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)
        self._lock = threading.Lock()

    # Blob ids are keyed BLAKE3 outputs: disjoint 8-byte slices are independent hashes
    # (the four bit positions are computed inline: a helper call per lookup cost more
    # than the lookup on a share of small files).

    def add(self, blob_id: bytes) -> bool:
        """Remember ``blob_id``; returns whether it may have been seen before (False:
        certainly new), so a caller asks once instead of ``in`` then ``add``."""
        m = self._mask
        a, b, c, d = _FOUR_U64.unpack_from(blob_id)
        a, b, c, d = a & m, b & m, c & m, d & m
        bits = self._bits
        with self._lock:
            seen = (
                bits[a >> 3] & (1 << (a & 7))
                and bits[b >> 3] & (1 << (b & 7))
                and bits[c >> 3] & (1 << (c & 7))
                and bits[d >> 3] & (1 << (d & 7))
            )
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)
            bits[c >> 3] |= 1 << (c & 7)
            bits[d >> 3] |= 1 << (d & 7)
        return bool(seen)

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes) or len(blob_id) < 8 * HASHES:
            return False
        m = self._mask
        a, b, c, d = _FOUR_U64.unpack_from(blob_id)
        a, b, c, d = a & m, b & m, c & m, d & m
        bits = self._bits
        return bool(
            bits[a >> 3] & (1 << (a & 7))
            and bits[b >> 3] & (1 << (b & 7))
            and bits[c >> 3] & (1 << (c & 7))
            and bits[d >> 3] & (1 << (d & 7))
        )
