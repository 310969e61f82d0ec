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

    def _positions(self, blob_id: bytes) -> tuple[int, int, int, int]:
        # Blob ids are keyed BLAKE3 outputs: disjoint 8-byte slices are independent hashes.
        m = self._mask
        a, b, c, d = _FOUR_U64.unpack_from(blob_id)
        return a & m, b & m, c & m, d & m

    def add(self, blob_id: bytes) -> None:
        """Remember ``blob_id``."""
        with self._lock:
            for pos in self._positions(blob_id):
                self._bits[pos >> 3] |= 1 << (pos & 7)

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes) or len(blob_id) < 8 * HASHES:
            return False
        bits = self._bits
        a, b, c, d = self._positions(blob_id)
        return bool(
            bits[a >> 3] & (1 << (a & 7))
            and bits[b >> 3] & (1 << (b & 7))
            and bits[c >> 3] & (1 << (c & 7))
            and bits[d >> 3] & (1 << (d & 7))
        )
