"""Pack objects: many encrypted blobs plus an encrypted entry table.

Layout::

    header   "FRMP" | u8 version | u8 kind | salt(16)          (22 bytes)
    blobs    record ...                                        (see blob.py)
    table    nonce(12) | AES-256-GCM(table plaintext) | tag(16), AAD = header + b"table"
    trailer  u32 LE table length | "FRME"

The pack id is the lowercase hex of the salt; the pack key is derived from it.
Table plaintext: ``u32 LE count`` then ``count`` entries of
``blob id(32) | u32 offset | u32 length | u32 raw length | u8 compression | u8 kind``.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ferryman.repository import blob, compression, crypto
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import CorruptObject, UnsupportedVersion

MAGIC = b"FRMP"
END_MAGIC = b"FRME"
VERSION = 1
_HEADER = struct.Struct("<4sBB")
HEADER_SIZE = _HEADER.size + crypto.SALT_SIZE
_TRAILER = struct.Struct("<I4s")
TRAILER_SIZE = _TRAILER.size
_ENTRY = struct.Struct("<32sIIIBB")
ENTRY_SIZE = _ENTRY.size
MAX_PACK_SIZE = (1 << 32) - 1
PREFIX_FOR_KIND = {blob.KIND_DATA: "data/", blob.KIND_TREE: "tree/"}
# Record nonces are taken from the OS's CSPRNG this many at a time, per thread: one
# os.urandom call per record was a system call that releases the GIL, i.e. a thread
# hand-off per blob on a share of small files.
NONCES_PER_DRAW = 256


class _Nonces(threading.local):
    """Random record nonces, drawn in bulk from ``os.urandom`` (one pool per thread;
    a forked child starts a fresh pool, never one its parent also uses)."""

    def __init__(self) -> None:
        self.pool = b""
        self.next = 0

    def take(self) -> bytes:
        if self.next >= len(self.pool):
            self.pool = os.urandom(crypto.NONCE_SIZE * NONCES_PER_DRAW)
            self.next = 0
        start = self.next
        self.next = start + crypto.NONCE_SIZE
        return self.pool[start : self.next]

    def take_many(self, count: int) -> tuple[bytes, int]:
        """``count`` nonces at once: ``(pool, start)``, nonce ``i`` being
        ``pool[start + 12 * i : start + 12 * (i + 1)]`` (no bytes object made per nonce)."""
        need = crypto.NONCE_SIZE * count
        if self.next + need > len(self.pool):
            self.pool = os.urandom(crypto.NONCE_SIZE * max(count, NONCES_PER_DRAW))
            self.next = 0
        start = self.next
        self.next = start + need
        return self.pool, start


_nonces = _Nonces()


def _fresh_nonces_after_fork() -> None:
    global _nonces
    _nonces = _Nonces()


os.register_at_fork(after_in_child=_fresh_nonces_after_fork)


_KIND_BYTE = [bytes((k,)) for k in range(256)]  # a record's AAD starts with its kind


class PackEntry(NamedTuple):
    """Where one blob sits inside a pack (a named tuple: one is made per blob stored,
    and a frozen dataclass's ``__init__`` cost several times as much)."""

    blob_id: bytes
    offset: int
    length: int
    raw_length: int
    compression: int
    kind: int


def pack_name(kind: int, pack_id: str) -> str:
    """The backend object name of a pack."""
    return f"{PREFIX_FOR_KIND[kind]}{pack_id[:2]}/{pack_id}"


def parse_pack_name(name: str) -> tuple[int, str] | None:
    """``(kind, pack id)`` from an object name, or ``None`` if it is not a pack name."""
    for kind, prefix in PREFIX_FOR_KIND.items():
        if name.startswith(prefix):
            rest = name[len(prefix) :].split("/")
            if len(rest) == 2 and len(rest[1]) == 32 and rest[1][:2] == rest[0]:
                try:
                    bytes.fromhex(rest[1])
                except ValueError:
                    return None
                return kind, rest[1]
    return None


def pack_cipher(encryption_key: bytes, pack_id: str) -> AESGCM:
    """The cipher of a pack, from its id (= hex of its salt)."""
    return crypto.object_cipher(encryption_key, bytes.fromhex(pack_id))


class PackBuilder:
    """One pack being filled in a preallocated buffer.

    Records are *reserved* (offset assigned, under the caller's lock) and then
    *written* (copied and encrypted in place, without any lock: reservations never
    overlap), so several threads fill one pack at once without extra copies.
    """

    def __init__(self, encryption_key: bytes, kind: int, buffer: bytearray | None = None) -> None:
        salt = crypto.new_salt()
        self.kind = kind
        self.pack_id = salt.hex()
        self.cipher = crypto.object_cipher(encryption_key, salt)
        self.header = _HEADER.pack(MAGIC, VERSION, kind) + salt
        self.buffer = buffer if buffer is not None else bytearray(HEADER_SIZE)
        self.buffer[:HEADER_SIZE] = self.header
        self.size = HEADER_SIZE
        self.entries: list[PackEntry] = []

    @property
    def capacity(self) -> int:
        """Bytes the buffer holds without growing."""
        return len(self.buffer)

    def reserve(
        self, blob_id: bytes, kind: int, payload_length: int, raw_length: int, method: int
    ) -> PackEntry:
        """Assign space for a record whose plaintext payload has ``payload_length`` bytes."""
        length = crypto.NONCE_SIZE + payload_length + crypto.TAG_SIZE
        entry = PackEntry(blob_id, self.size, length, raw_length, method, kind)
        self.size += length
        if self.size > len(self.buffer):
            self.buffer.extend(bytes(self.size - len(self.buffer)))
        self.entries.append(entry)
        return entry

    def write(self, entry: PackEntry, body: bytes | bytearray | memoryview) -> None:
        """Place ``u8 compression | body`` at ``entry`` and encrypt it in place."""
        nonce = _nonces.take()
        start = entry.offset + crypto.NONCE_SIZE
        end = entry.offset + entry.length - crypto.TAG_SIZE
        with memoryview(self.buffer) as view:
            view[entry.offset : start] = nonce
            view[start] = entry.compression
            view[start + 1 : end] = body
            self.cipher.encrypt_into(
                nonce,
                view[start:end],
                _KIND_BYTE[entry.kind] + entry.blob_id,
                view[start : end + crypto.TAG_SIZE],
            )

    def write_many(self, placed: list[tuple[PackEntry, bytes | bytearray | memoryview]]) -> None:
        """:meth:`write` for several reserved records (one buffer view, one nonce draw)."""
        if len(placed) == 1:
            self.write(*placed[0])
            return
        pool, at = _nonces.take_many(len(placed))
        seal = self.cipher.encrypt_into
        nonce_size, tag_size = crypto.NONCE_SIZE, crypto.TAG_SIZE
        with memoryview(self.buffer) as view, memoryview(pool) as nonces:
            for entry, body in placed:
                offset = entry.offset
                start = offset + nonce_size
                end = offset + entry.length - tag_size
                nonce = nonces[at : at + nonce_size]
                at += nonce_size
                view[offset:start] = nonce
                view[start] = entry.compression
                view[start + 1 : end] = body
                seal(
                    nonce,
                    view[start:end],
                    _KIND_BYTE[entry.kind] + entry.blob_id,
                    view[start : end + tag_size],
                )

    def add_record(
        self, blob_id: bytes, kind: int, record: bytes, raw_length: int, method: int
    ) -> PackEntry:
        """Append an already sealed record (``nonce | ciphertext | tag``)."""
        payload_length = len(record) - crypto.NONCE_SIZE - crypto.TAG_SIZE
        entry = self.reserve(blob_id, kind, payload_length, raw_length, method)
        self.buffer[entry.offset : entry.offset + entry.length] = record
        return entry

    def finish(self) -> memoryview:
        """Write the table and trailer after the records; return the whole pack."""
        table = bytearray(struct.pack("<I", len(self.entries)))
        for e in self.entries:
            table += _ENTRY.pack(e.blob_id, e.offset, e.length, e.raw_length, e.compression, e.kind)
        sealed = crypto.seal(self.cipher, bytes(table), self.header + b"table")
        tail = sealed + _TRAILER.pack(len(sealed), END_MAGIC)
        total = self.size + len(tail)
        if total > MAX_PACK_SIZE:
            raise ValueError("pack exceeds 4 GiB")
        if total > len(self.buffer):
            self.buffer.extend(bytes(total - len(self.buffer)))
        self.buffer[self.size : total] = tail
        return memoryview(self.buffer)[:total]


def check_header(data: bytes, name: str, pack_id: str) -> int:
    """Validate a pack header; return the pack kind."""
    if len(data) < HEADER_SIZE:
        raise CorruptObject(f"pack {name}: truncated header")
    magic, version, kind = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptObject(f"pack {name}: bad magic (not a Ferryman pack)")
    if version != VERSION:
        raise UnsupportedVersion(f"pack {name}: pack format version {version} is not supported")
    if kind not in PREFIX_FOR_KIND:
        raise CorruptObject(f"pack {name}: unknown pack kind {kind}")
    if data[_HEADER.size : HEADER_SIZE] != bytes.fromhex(pack_id):
        raise CorruptObject(f"pack {name}: salt does not match the pack id")
    return int(kind)


def parse_table(
    encryption_key: bytes, pack_id: str, header: bytes, sealed: bytes, pack_size: int, name: str
) -> list[PackEntry]:
    """Decrypt and validate an entry table read from a pack of ``pack_size`` bytes."""
    cipher = pack_cipher(encryption_key, pack_id)
    table = crypto.unseal(cipher, sealed, header + b"table", f"pack {name} table")
    if len(table) < 4:
        raise CorruptObject(f"pack {name}: entry table truncated")
    (count,) = struct.unpack_from("<I", table)
    if len(table) != 4 + count * ENTRY_SIZE:
        raise CorruptObject(f"pack {name}: entry table claims {count} entries, size disagrees")
    limit = pack_size - TRAILER_SIZE - len(sealed)
    entries = []
    for i in range(count):
        bid, off, length, raw, method, kind = _ENTRY.unpack_from(table, 4 + i * ENTRY_SIZE)
        if off < HEADER_SIZE or off + length > limit or length < blob.RECORD_OVERHEAD:
            raise CorruptObject(f"pack {name}: entry {i} points outside the pack")
        if raw > blob.MAX_BLOB_SIZE:
            raise CorruptObject(f"pack {name}: entry {i} claims {raw} bytes, over the limit")
        if method not in (compression.COMPRESSION_NONE, compression.COMPRESSION_ZSTD):
            raise CorruptObject(f"pack {name}: entry {i} has unknown compression {method}")
        if kind not in blob.KIND_NAMES:
            raise CorruptObject(f"pack {name}: entry {i} has unknown kind {kind}")
        entries.append(PackEntry(bid, off, length, raw, method, kind))
    return entries


def split_pack(data: bytes, encryption_key: bytes, pack_id: str, name: str) -> list[PackEntry]:
    """Validate a whole pack held in memory and return its entries."""
    check_header(data, name, pack_id)
    if len(data) < HEADER_SIZE + TRAILER_SIZE:
        raise CorruptObject(f"pack {name}: truncated ({len(data)} bytes)")
    table_len, end = _TRAILER.unpack_from(data, len(data) - TRAILER_SIZE)
    if end != END_MAGIC:
        raise CorruptObject(f"pack {name}: bad end magic (truncated or damaged)")
    if table_len > len(data) - HEADER_SIZE - TRAILER_SIZE:
        raise CorruptObject(f"pack {name}: table length {table_len} exceeds the pack")
    start = len(data) - TRAILER_SIZE - table_len
    return parse_table(
        encryption_key,
        pack_id,
        data[:HEADER_SIZE],
        data[start : start + table_len],
        len(data),
        name,
    )


def read_table(backend: Backend, encryption_key: bytes, kind: int, pack_id: str) -> list[PackEntry]:
    """Read only a pack's header and table with range requests."""
    name = pack_name(kind, pack_id)
    size = backend.size(name)
    if size < HEADER_SIZE + TRAILER_SIZE:
        raise CorruptObject(f"pack {name}: truncated ({size} bytes)")
    header = backend.get_range(name, 0, HEADER_SIZE)
    if check_header(header, name, pack_id) != kind:
        raise CorruptObject(f"pack {name}: kind in header does not match its location")
    trailer = backend.get_range(name, size - TRAILER_SIZE, TRAILER_SIZE)
    if len(trailer) != TRAILER_SIZE:
        raise CorruptObject(f"pack {name}: truncated trailer")
    table_len, end = _TRAILER.unpack(trailer)
    if end != END_MAGIC:
        raise CorruptObject(f"pack {name}: bad end magic (truncated or damaged)")
    if table_len > size - HEADER_SIZE - TRAILER_SIZE:
        raise CorruptObject(f"pack {name}: table length {table_len} exceeds the pack")
    sealed = backend.get_range(name, size - TRAILER_SIZE - table_len, table_len)
    return parse_table(encryption_key, pack_id, header, sealed, size, name)
