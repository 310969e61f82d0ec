"""GC state objects ``gc/condemned-<generation>`` (standalone encrypted, kind 4).

Plaintext msgpack: ``{"v": 1, "generation": int, "marked": float,
"packs": [pack id (16 bytes)...], "writers": [lease id...] | null}``.
``writers`` is null until the mark phase has listed the live writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ferryman.repository import envelope
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import CorruptObject, ObjectNotFound

GC_PREFIX = "gc/"
CONDEMNED_PREFIX = "gc/condemned-"


@dataclass
class CondemnedList:
    """Packs condemned by one mark phase, and the writers alive after it was durable."""

    generation: int
    marked: float
    packs: list[bytes]
    writers: list[str] | None

    @property
    def name(self) -> str:
        """Backend object name."""
        return f"{CONDEMNED_PREFIX}{self.generation:020d}"

    def seal(self, encryption_key: bytes) -> bytes:
        """Encrypted object bytes."""
        payload = msgpack.packb(
            {
                "v": 1,
                "generation": self.generation,
                "marked": self.marked,
                "packs": self.packs,
                "writers": self.writers,
            },
            use_bin_type=True,
        )
        return envelope.seal_object(encryption_key, envelope.KIND_GC_STATE, payload)

    @classmethod
    def open(cls, encryption_key: bytes, data: bytes, name: str) -> CondemnedList:
        """Decrypt and parse."""
        plain = envelope.open_object(encryption_key, envelope.KIND_GC_STATE, data, name)
        try:
            doc: Any = msgpack.unpackb(plain, raw=False)
            packs = list(doc["packs"])
            if not all(isinstance(p, bytes) and len(p) == 16 for p in packs):
                raise ValueError("pack ids must be 16 bytes")
            writers = doc["writers"]
            out = cls(
                generation=int(doc["generation"]),
                marked=float(doc["marked"]),
                packs=packs,
                writers=None if writers is None else [str(w) for w in writers],
            )
        except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise CorruptObject(f"{name}: malformed gc state ({exc})") from None
        if any(len(p) != 16 for p in packs):
            raise CorruptObject(f"{name}: malformed pack id")
        return out


def load_condemned(backend: Backend, encryption_key: bytes) -> list[CondemnedList]:
    """Every condemned list currently in the repository, oldest generation first."""
    out = []
    for name in sorted(backend.list(CONDEMNED_PREFIX)):
        try:
            out.append(CondemnedList.open(encryption_key, backend.get(name), name))
        except ObjectNotFound:
            continue  # swept meanwhile
    return out


def condemned_packs(backend: Backend, encryption_key: bytes) -> set[bytes]:
    """Union of all condemned pack ids (what a writer must treat as absent)."""
    packs: set[bytes] = set()
    for item in load_condemned(backend, encryption_key):
        packs.update(item.packs)
    return packs
