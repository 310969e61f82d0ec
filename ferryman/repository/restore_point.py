"""Restore point manifests ``points/<id>`` (standalone encrypted objects, kind 2).

The plaintext is a msgpack map; see docs/format.md for the field list.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ferryman.repository import envelope
from ferryman.repository.errors import CorruptObject

POINTS_PREFIX = "points/"
POINT_VERSION = 1


@dataclass
class RestorePoint:
    """The state of one share at one session: a root tree plus descriptive fields."""

    id: str
    share: str
    root: bytes
    time: float
    job: str = ""
    session: str = ""
    hostname: str = ""
    proxy: str = ""
    parent: str | None = None
    checkpoint: bool = False
    partitions: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Backend object name."""
        return POINTS_PREFIX + self.id

    def to_payload(self) -> bytes:
        """msgpack plaintext of the manifest."""
        doc = {
            "v": POINT_VERSION,
            "id": self.id,
            "share": self.share,
            "root": self.root,
            "time": self.time,
            "job": self.job,
            "session": self.session,
            "hostname": self.hostname,
            "proxy": self.proxy,
            "parent": self.parent,
            "checkpoint": self.checkpoint,
            "partitions": self.partitions,
            "stats": self.stats,
            "extra": self.extra,
        }
        data: bytes = msgpack.packb(doc, use_bin_type=True)
        return data

    @classmethod
    def from_payload(cls, data: bytes, name: str) -> RestorePoint:
        """Parse and validate a manifest plaintext."""
        try:
            doc: Any = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptObject(f"{name}: manifest is not valid msgpack ({exc})") from None
        if not isinstance(doc, dict) or doc.get("v") != POINT_VERSION:
            raise CorruptObject(f"{name}: unsupported restore point manifest")
        if not isinstance(doc.get("root"), bytes) or not isinstance(doc.get("id"), str):
            raise CorruptObject(f"{name}: restore point without a valid id or root tree id")
        try:
            point = cls(
                id=str(doc["id"]),
                share=str(doc["share"]),
                root=doc["root"],
                time=float(doc["time"]),
                job=str(doc.get("job", "")),
                session=str(doc.get("session", "")),
                hostname=str(doc.get("hostname", "")),
                proxy=str(doc.get("proxy", "")),
                parent=None if doc.get("parent") is None else str(doc["parent"]),
                checkpoint=bool(doc.get("checkpoint", False)),
                partitions=list(doc.get("partitions") or []),
                stats=dict(doc.get("stats") or {}),
                extra=dict(doc.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptObject(f"{name}: malformed restore point manifest ({exc})") from None
        if len(point.root) != 32:
            raise CorruptObject(f"{name}: root tree id is not 32 bytes")
        if name != point.name:
            raise CorruptObject(f"{name}: manifest claims to be {point.name}")
        return point


def new_point_id() -> str:
    """A fresh random restore point id."""
    return secrets.token_hex(16)


def seal_point(encryption_key: bytes, point: RestorePoint) -> bytes:
    """Encrypted manifest object."""
    return envelope.seal_object(encryption_key, envelope.KIND_RESTORE_POINT, point.to_payload())


def open_point(encryption_key: bytes, data: bytes, name: str) -> RestorePoint:
    """Decrypt and parse a manifest object."""
    plain = envelope.open_object(encryption_key, envelope.KIND_RESTORE_POINT, data, name)
    return RestorePoint.from_payload(plain, name)
