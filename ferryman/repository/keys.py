"""Key slots: the master secret wrapped under passphrase-derived keys.

``keys/<slot id>`` is plaintext JSON::

    {"format": "ferryman-key", "version": 1, "kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
     "salt": <base64 16 bytes>, "wrapped": <base64 nonce(12) | ciphertext(32) | tag(16)>,
     "created": <unix time>, "label": <text>}

The wrapping key is ``scrypt(passphrase, salt, n, r, p, 32)``; the wrapped value
is the 32-byte master secret sealed with AES-256-GCM, associated data
``b"ferryman-key-slot:" + repository id``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ferryman.repository import crypto
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import (
    CorruptObject,
    KeySlotError,
    ObjectNotFound,
    UnsupportedVersion,
    WrongPassphrase,
)

KEYS_PREFIX = "keys/"
DEFAULT_SCRYPT_N = 1 << 15
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
MAX_SCRYPT_N = 1 << 22
MAX_SCRYPT_MEMORY = 256 << 20


@dataclass(frozen=True)
class KeySlot:
    """One key slot as stored (without the secret)."""

    id: str
    n: int
    r: int
    p: int
    salt: bytes
    wrapped: bytes
    created: float
    label: str


def _wrapping_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=n, r=r, p=p)
    return kdf.derive(passphrase.encode("utf-8"))


# Wrapping keys derived in this process, by (salt, n, r, p, hash of passphrase): a
# long-running proxy opens the same repository for every task, and scrypt costs
# ~0.2 s each time.  The process holds the master secret while a repository is open
# anyway, so keeping its wrapping key too exposes nothing more.
_DERIVED: OrderedDict[tuple[bytes, int, int, int, bytes], bytes] = OrderedDict()
_DERIVED_MAX = 16
_DERIVED_LOCK = threading.Lock()


def _cached_wrapping_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    tag = hashlib.sha256(salt + passphrase.encode("utf-8")).digest()
    key = (salt, n, r, p, tag)
    with _DERIVED_LOCK:
        found = _DERIVED.get(key)
        if found is not None:
            _DERIVED.move_to_end(key)
            return found
    derived = _wrapping_key(passphrase, salt, n, r, p)
    with _DERIVED_LOCK:
        _DERIVED[key] = derived
        while len(_DERIVED) > _DERIVED_MAX:
            _DERIVED.popitem(last=False)
    return derived


def _aad(repo_id: str) -> bytes:
    return b"ferryman-key-slot:" + repo_id.encode()


def make_slot(
    master: bytes, passphrase: str, repo_id: str, *, n: int, r: int, p: int, label: str = ""
) -> tuple[str, bytes]:
    """Wrap ``master`` under ``passphrase``; return ``(slot id, JSON bytes)``."""
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    salt = os.urandom(16)
    cipher = AESGCM(_wrapping_key(passphrase, salt, n, r, p))
    wrapped = crypto.seal(cipher, master, _aad(repo_id))
    doc = {
        "format": "ferryman-key",
        "version": 1,
        "kdf": "scrypt",
        "n": n,
        "r": r,
        "p": p,
        "salt": base64.b64encode(salt).decode(),
        "wrapped": base64.b64encode(wrapped).decode(),
        "created": time.time(),
        "label": label,
    }
    return secrets.token_hex(16), json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_slot(slot_id: str, data: bytes) -> KeySlot:
    """Parse a key slot object; refuse unknown versions and absurd parameters."""
    try:
        doc: Any = json.loads(data)
        if doc.get("format") != "ferryman-key" or doc.get("version") != 1:
            raise UnsupportedVersion(
                f"keys/{slot_id}: unsupported key slot format {doc.get('format')!r} "
                f"version {doc.get('version')!r}"
            )
        if doc.get("kdf") != "scrypt":
            raise UnsupportedVersion(f"keys/{slot_id}: unsupported kdf {doc.get('kdf')!r}")
        slot = KeySlot(
            id=slot_id,
            n=int(doc["n"]),
            r=int(doc["r"]),
            p=int(doc["p"]),
            salt=base64.b64decode(doc["salt"], validate=True),
            wrapped=base64.b64decode(doc["wrapped"], validate=True),
            created=float(doc["created"]),
            label=str(doc.get("label", "")),
        )
    except UnsupportedVersion:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptObject(f"keys/{slot_id}: malformed key slot ({exc})") from None
    if not (2 <= slot.n <= MAX_SCRYPT_N and slot.n & (slot.n - 1) == 0):
        raise CorruptObject(f"keys/{slot_id}: scrypt n={slot.n} out of range")
    if not (1 <= slot.r <= 32 and 1 <= slot.p <= 16):
        raise CorruptObject(f"keys/{slot_id}: scrypt r/p out of range")
    if 128 * slot.n * slot.r > MAX_SCRYPT_MEMORY:
        raise CorruptObject(f"keys/{slot_id}: scrypt parameters would need more than 256 MiB")
    return slot


def try_slot(slot: KeySlot, passphrase: str, repo_id: str) -> bytes | None:
    """Return the master secret if ``passphrase`` opens ``slot``, else ``None``."""
    cipher = AESGCM(_cached_wrapping_key(passphrase, slot.salt, slot.n, slot.r, slot.p))
    view = slot.wrapped
    if len(view) != crypto.NONCE_SIZE + crypto.KEY_SIZE + crypto.TAG_SIZE:
        return None
    try:
        master = cipher.decrypt(view[: crypto.NONCE_SIZE], view[crypto.NONCE_SIZE :], _aad(repo_id))
    except InvalidTag:
        return None
    return master


def load_slots(backend: Backend) -> list[KeySlot]:
    """Every key slot of the repository (skipping none: a malformed slot is an error)."""
    slots = []
    for name in sorted(backend.list(KEYS_PREFIX)):
        slot_id = name[len(KEYS_PREFIX) :]
        try:
            slots.append(parse_slot(slot_id, backend.get(name)))
        except ObjectNotFound:
            continue
    return slots


def unlock(backend: Backend, passphrase: str, repo_id: str) -> tuple[bytes, str]:
    """Find the slot ``passphrase`` opens; return ``(master secret, slot id)``.

    Unreadable slots are skipped (another slot may still open the repository).
    """
    slots: list[KeySlot] = []
    problems: list[str] = []
    for name in sorted(backend.list(KEYS_PREFIX)):
        try:
            slots.append(parse_slot(name[len(KEYS_PREFIX) :], backend.get(name)))
        except (CorruptObject, UnsupportedVersion) as exc:
            problems.append(str(exc))
        except ObjectNotFound:
            continue
    if not slots:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise CorruptObject(f"repository has no usable key slot{detail}")
    for slot in slots:
        master = try_slot(slot, passphrase, repo_id)
        if master is not None:
            return master, slot.id
    raise WrongPassphrase(f"wrong passphrase for repository {repo_id}")


def add_slot(
    backend: Backend,
    master: bytes,
    passphrase: str,
    repo_id: str,
    *,
    n: int = DEFAULT_SCRYPT_N,
    r: int = DEFAULT_SCRYPT_R,
    p: int = DEFAULT_SCRYPT_P,
    label: str = "",
) -> str:
    """Store a new key slot for ``passphrase``; return its id."""
    slot_id, data = make_slot(master, passphrase, repo_id, n=n, r=r, p=p, label=label)
    backend.put(KEYS_PREFIX + slot_id, data)
    return slot_id


def remove_slot(backend: Backend, slot_id: str) -> None:
    """Delete a key slot, refusing to delete the last one."""
    ids = [s.id for s in load_slots(backend)]
    if slot_id not in ids:
        raise KeySlotError(f"no key slot {slot_id!r} in this repository")
    if len(ids) == 1:
        raise KeySlotError("refusing to remove the last key slot (the repository would be lost)")
    backend.delete(KEYS_PREFIX + slot_id)
