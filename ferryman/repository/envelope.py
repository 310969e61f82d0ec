"""Standalone encrypted objects: index segments, restore points, leases, GC state.

Layout: ``"FRMO" | u8 version | u8 kind | salt(16) | nonce(12) | ciphertext | tag(16)``.
The AES-256-GCM key is derived from the salt (see :mod:`crypto`); the 22-byte
header (magic, version, kind, salt) is the associated data, so an object cannot
be passed off as another kind.  The plaintext is a compressed payload
(:mod:`compression`).
"""

from __future__ import annotations

import struct

from ferryman.repository import compression, crypto
from ferryman.repository.errors import CorruptObject, UnsupportedVersion

MAGIC = b"FRMO"
VERSION = 1
KIND_INDEX = 1
KIND_RESTORE_POINT = 2
KIND_WRITER_LEASE = 3
KIND_GC_STATE = 4
KIND_NAMES = {
    KIND_INDEX: "index segment",
    KIND_RESTORE_POINT: "restore point",
    KIND_WRITER_LEASE: "writer lease",
    KIND_GC_STATE: "gc state",
}
_PREFIX = struct.Struct("<4sBB")
HEADER_SIZE = _PREFIX.size + crypto.SALT_SIZE
# Largest plaintext a standalone object may claim (consolidated index segments).
MAX_OBJECT_SIZE = 1 << 30


def seal_object(encryption_key: bytes, kind: int, payload: bytes) -> bytes:
    """Compress and encrypt ``payload`` as a standalone object of ``kind``."""
    salt = crypto.new_salt()
    header = _PREFIX.pack(MAGIC, VERSION, kind) + salt
    cipher = crypto.object_cipher(encryption_key, salt)
    return header + crypto.seal(cipher, compression.compress(payload, 3), header)


def open_object(encryption_key: bytes, kind: int, data: bytes, name: str) -> bytes:
    """Authenticate, decrypt and decompress the standalone object ``name``."""
    if len(data) < HEADER_SIZE + crypto.NONCE_SIZE + crypto.TAG_SIZE:
        raise CorruptObject(f"{name}: truncated ({len(data)} bytes)")
    magic, version, found_kind = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CorruptObject(f"{name}: not a Ferryman repository object (bad magic)")
    if version != VERSION:
        raise UnsupportedVersion(
            f"{name}: object format version {version} is not supported by this Ferryman "
            f"(it reads version {VERSION}); upgrade Ferryman"
        )
    if found_kind != kind:
        want = KIND_NAMES.get(kind, str(kind))
        got = KIND_NAMES.get(found_kind, str(found_kind))
        raise CorruptObject(f"{name}: expected a {want}, found a {got}")
    header = data[:HEADER_SIZE]
    cipher = crypto.object_cipher(encryption_key, header[_PREFIX.size :])
    payload = crypto.unseal(cipher, memoryview(data)[HEADER_SIZE:], header, name)
    return compression.decompress(payload, None, MAX_OBJECT_SIZE, name)
