"""Key derivation and authenticated encryption primitives.

All subkeys derive from the 32-byte master secret with BLAKE3 in derive-key
mode (one context string per purpose).  Objects are never encrypted under the
encryption subkey directly: each pack or standalone object draws a random
16-byte salt and uses ``BLAKE3-keyed(encryption_key, salt)`` as its AES-256-GCM
key, so one derived key only ever encrypts the few messages of one object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ferryman.repository.errors import CorruptObject

KEY_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12
TAG_SIZE = 16
BLOB_ID_SIZE = 32

CONTEXT_ENCRYPTION = "ferryman repository v1 2026-11-24 encryption key"
CONTEXT_BLOB_ID = "ferryman repository v1 2026-11-24 blob id key"
CONTEXT_CHUNKER = "ferryman repository v1 2026-11-24 chunker seed"


def derive_subkey(master: bytes, context: str, length: int = KEY_SIZE) -> bytes:
    """Derive a subkey of ``length`` bytes from ``master`` for the purpose named by ``context``."""
    hasher = blake3.blake3(derive_key_context=context)
    hasher.update(master)
    return hasher.digest(length)


@dataclass(frozen=True)
class RepositoryKeys:
    """The subkeys a repository uses, derived from its master secret."""

    encryption: bytes
    blob_id: bytes
    chunker_seed: int

    @classmethod
    def from_master(cls, master: bytes) -> RepositoryKeys:
        """Derive every subkey from the 32-byte master secret."""
        if len(master) != KEY_SIZE:
            raise ValueError("master secret must be 32 bytes")
        seed_bytes = derive_subkey(master, CONTEXT_CHUNKER, 8)
        # pyfastcdc XORs the seed into its gear table when seed > 0; keep it
        # a positive 63-bit integer so every binding treats it the same way.
        seed = (int.from_bytes(seed_bytes, "little") >> 1) | 1
        return cls(
            encryption=derive_subkey(master, CONTEXT_ENCRYPTION),
            blob_id=derive_subkey(master, CONTEXT_BLOB_ID),
            chunker_seed=seed,
        )


def object_key(encryption_key: bytes, salt: bytes) -> bytes:
    """The AES-256-GCM key of one pack or standalone object: keyed BLAKE3 of its salt."""
    return blake3.blake3(salt, key=encryption_key).digest()


def object_cipher(encryption_key: bytes, salt: bytes) -> AESGCM:
    """An AES-GCM cipher keyed for the object whose salt is ``salt``."""
    return AESGCM(object_key(encryption_key, salt))


def blob_id(blob_id_key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Keyed BLAKE3 of ``data``: the 32-byte id of a blob."""
    return blake3.blake3(data, key=blob_id_key).digest()


def new_salt() -> bytes:
    """A fresh random salt."""
    return os.urandom(SALT_SIZE)


def seal(cipher: AESGCM, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytes:
    """Encrypt with a fresh random nonce; returns ``nonce | ciphertext | tag``."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def unseal(cipher: AESGCM, record: bytes | bytearray | memoryview, aad: bytes, what: str) -> bytes:
    """Decrypt ``nonce | ciphertext | tag``; raise :class:`CorruptObject` naming ``what``."""
    view = memoryview(record)
    if len(view) < NONCE_SIZE + TAG_SIZE:
        raise CorruptObject(f"{what}: encrypted record truncated ({len(view)} bytes)")
    try:
        return cipher.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag:
        raise CorruptObject(
            f"{what}: authentication failed (data damaged, truncated or not from this repository)"
        ) from None
