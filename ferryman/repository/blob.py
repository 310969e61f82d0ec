"""One blob inside a pack: compress, then encrypt with the pack's cipher.

Stored record: ``nonce(12) | AES-256-GCM(compressed payload) | tag(16)`` with
associated data ``u8 kind | blob id(32)``.  Reading checks the record's
authenticity, the decompressed size against the index, and that the keyed
BLAKE3 of the plaintext equals the blob id.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ferryman.repository import compression, crypto
from ferryman.repository.errors import CorruptObject

KIND_DATA = 1
KIND_TREE = 2
KIND_NAMES = {KIND_DATA: "data", KIND_TREE: "tree"}
# Hard limit on a blob's plaintext size (chunks are <= 16 MiB; tree blobs are bounded).
MAX_BLOB_SIZE = 16 << 20
RECORD_OVERHEAD = crypto.NONCE_SIZE + 1 + crypto.TAG_SIZE


def record_aad(kind: int, blob_id: bytes) -> bytes:
    """The associated data a blob's record is sealed with: its kind and its id."""
    return bytes((kind,)) + blob_id


def seal_blob(
    cipher: AESGCM,
    kind: int,
    blob_id: bytes,
    data: bytes | bytearray | memoryview,
    level: int = compression.DEFAULT_LEVEL,
) -> tuple[bytes, int]:
    """Return ``(record, compression method)`` for ``data``."""
    if len(data) > MAX_BLOB_SIZE:
        raise ValueError(f"blob of {len(data)} bytes exceeds the {MAX_BLOB_SIZE}-byte limit")
    payload = compression.compress(data, level)
    return crypto.seal(cipher, payload, record_aad(kind, blob_id)), payload[0]


def open_blob(
    cipher: AESGCM,
    kind: int,
    blob_id: bytes,
    record: bytes | bytearray | memoryview,
    raw_length: int,
    blob_id_key: bytes | None,
    where: str,
) -> bytes:
    """Authenticate and decode a record; verify the plaintext hashes to ``blob_id``."""
    what = f"blob {blob_id.hex()} in {where}"
    if raw_length > MAX_BLOB_SIZE:
        raise CorruptObject(f"{what}: claims {raw_length} bytes, over the blob size limit")
    payload = crypto.unseal(cipher, record, record_aad(kind, blob_id), what)
    data = compression.decompress(payload, raw_length, MAX_BLOB_SIZE, what)
    if blob_id_key is not None and crypto.blob_id(blob_id_key, data) != blob_id:
        raise CorruptObject(f"{what}: content does not match its id")
    return data
