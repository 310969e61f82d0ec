"""Index segments ``index/<id>``: which pack holds which blob.

A segment is a standalone encrypted object (kind 1) whose plaintext is::

    "FRMI" | u32 LE pack count | pack ids (16 bytes each)
    | u32 LE entry count | entries sorted by blob id

with fixed-width entries ``blob id(32) | u32 pack number | u32 offset |
u32 length | u32 raw length | u8 compression | u8 kind`` (50 bytes), where the
pack number indexes the pack-id list.  A writer uploads a segment only after
every pack it lists is durable.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from ferryman.repository import blob, compression, envelope
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import CorruptObject

INDEX_PREFIX = "index/"
MAGIC = b"FRMI"
_ENTRY = struct.Struct("<32sIIIIBB")
ENTRY_SIZE = _ENTRY.size
# Writers cut a segment at this many entries; GC consolidates into segments this large.
MAX_ENTRIES_PER_SEGMENT = 1 << 20


class PackRecord(Protocol):
    """What a pack's table says of one record (``pack.PackEntry``)."""

    @property
    def blob_id(self) -> bytes: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def raw_length(self) -> int: ...
    @property
    def compression(self) -> int: ...
    @property
    def kind(self) -> int: ...


class IndexEntry(NamedTuple):
    """The location of one blob (a named tuple: one is made per blob stored or looked
    up, and a frozen dataclass's ``__init__`` cost several times as much)."""

    blob_id: bytes
    pack_id: bytes
    offset: int
    length: int
    raw_length: int
    compression: int
    kind: int

    @classmethod
    def of_pack(cls, pack_id: bytes, records: Iterable[PackRecord]) -> list[IndexEntry]:
        """The entries of a pack's records (its table, or what a writer put in it)."""
        return [
            cls(r.blob_id, pack_id, r.offset, r.length, r.raw_length, r.compression, r.kind)
            for r in records
        ]

    @property
    def pack_hex(self) -> str:
        """The pack id as used in object names."""
        return self.pack_id.hex()


def new_segment_name() -> str:
    """A fresh random segment object name."""
    return INDEX_PREFIX + secrets.token_hex(16)


def encode_segment(entries: Iterable[IndexEntry]) -> bytes:
    """Plaintext of a segment holding ``entries`` (sorted here by blob id)."""
    return encode_sorted_segment(sorted(entries, key=lambda e: e.blob_id))[0]


def encode_sorted_segment(entries: Iterable[IndexEntry]) -> tuple[bytes, int]:
    """Plaintext of a segment holding ``entries``, already in blob-id order (as the
    index cache's ``iter_entries`` yields them), and how many there were: encoded
    as they come instead of held and sorted (garbage collection's
    consolidation writes segments of up to ``MAX_ENTRIES_PER_SEGMENT`` entries; a
    list of that many entries took ~0.45 KB each)."""
    packs: dict[bytes, int] = {}
    body = bytearray()
    count = 0
    pack_entry = _ENTRY.pack
    for e in entries:
        number = packs.setdefault(e.pack_id, len(packs))
        body += pack_entry(
            e.blob_id, number, e.offset, e.length, e.raw_length, e.compression, e.kind
        )
        count += 1
    head = [MAGIC, struct.pack("<I", len(packs)), *packs, struct.pack("<I", count)]
    return b"".join([*head, body]), count


def decode_segment(data: bytes, name: str) -> tuple[list[bytes], Iterator[IndexEntry]]:
    """Validate a segment's plaintext; return its pack ids and an iterator over entries."""
    if len(data) < 12 or data[:4] != MAGIC:
        raise CorruptObject(f"{name}: not an index segment")
    (n_packs,) = struct.unpack_from("<I", data, 4)
    pos = 8 + 16 * n_packs
    if len(data) < pos + 4:
        raise CorruptObject(f"{name}: truncated pack list")
    packs = [data[8 + 16 * i : 24 + 16 * i] for i in range(n_packs)]
    (n_entries,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if len(data) != pos + n_entries * ENTRY_SIZE:
        raise CorruptObject(f"{name}: entry count {n_entries} does not match its size")

    def entries() -> Iterator[IndexEntry]:
        for bid, pnum, off, length, raw, method, kind in _ENTRY.iter_unpack(memoryview(data)[pos:]):
            if pnum >= n_packs or raw > blob.MAX_BLOB_SIZE or kind not in blob.KIND_NAMES:
                raise CorruptObject(f"{name}: invalid entry for blob {bid.hex()}")
            if method not in (compression.COMPRESSION_NONE, compression.COMPRESSION_ZSTD):
                raise CorruptObject(f"{name}: unknown compression in entry {bid.hex()}")
            yield IndexEntry(bid, packs[pnum], off, length, raw, method, kind)

    return packs, entries()


Row = tuple[bytes, bytes, int, int, int, int, int]


def segment_rows(encryption_key: bytes, data: bytes, name: str) -> Iterator[Row]:
    """Decrypt a segment and yield plain tuples (the fast path of the index cache).

    Tuples are ``(blob id, pack id, offset, length, raw length, method, kind)``.
    """
    plain = envelope.open_object(encryption_key, envelope.KIND_INDEX, data, name)
    packs, _ = decode_segment(plain, name)  # validates the header and sizes
    start = 12 + 16 * len(packs)
    methods = (compression.COMPRESSION_NONE, compression.COMPRESSION_ZSTD)
    for bid, pnum, off, length, raw, method, kind in _ENTRY.iter_unpack(memoryview(plain)[start:]):
        if pnum >= len(packs) or raw > blob.MAX_BLOB_SIZE or kind not in blob.KIND_NAMES:
            raise CorruptObject(f"{name}: invalid entry for blob {bid.hex()}")
        if method not in methods:
            raise CorruptObject(f"{name}: unknown compression in entry {bid.hex()}")
        yield bid, packs[pnum], off, length, raw, method, kind


def put_segment(backend: Backend, encryption_key: bytes, entries: Iterable[IndexEntry]) -> str:
    """Upload a new segment holding ``entries``; returns its object name."""
    return put_encoded_segment(backend, encryption_key, encode_segment(entries))


def put_encoded_segment(backend: Backend, encryption_key: bytes, plain: bytes) -> str:
    """Upload a segment's plaintext (:func:`encode_segment`, :func:`encode_sorted_segment`)
    as a new segment object; returns its object name."""
    name = new_segment_name()
    backend.put(name, envelope.seal_object(encryption_key, envelope.KIND_INDEX, plain))
    return name


def open_segment(
    encryption_key: bytes, data: bytes, name: str
) -> tuple[list[bytes], Iterator[IndexEntry]]:
    """Decrypt and decode a segment object."""
    plain = envelope.open_object(encryption_key, envelope.KIND_INDEX, data, name)
    return decode_segment(plain, name)
