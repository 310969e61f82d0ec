"""Writer leases ``writers/<id>``: how garbage collection knows who is writing.

A writer puts its lease before it reads the GC state, refreshes it from a
background thread, and deletes it when it closes.  A lease whose ``expires``
time has passed counts as ended.  A writer that could not refresh its lease in
time stops publishing (index segments, restore points): see docs/format.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from ferryman.repository import envelope
from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import CorruptObject, LeaseExpired, RepositoryError

WRITERS_PREFIX = "writers/"
DEFAULT_LEASE_TIMEOUT = 900.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as read back from the repository."""

    id: str
    name: str
    hostname: str
    pid: int
    started: float
    expires: float


def encode_lease(info: LeaseInfo) -> bytes:
    """msgpack plaintext of a lease."""
    data: bytes = msgpack.packb(
        {
            "v": 1,
            "id": info.id,
            "name": info.name,
            "hostname": info.hostname,
            "pid": info.pid,
            "started": info.started,
            "expires": info.expires,
        },
        use_bin_type=True,
    )
    return data


def decode_lease(encryption_key: bytes, data: bytes, name: str) -> LeaseInfo:
    """Decrypt and parse a lease object."""
    plain = envelope.open_object(encryption_key, envelope.KIND_WRITER_LEASE, data, name)
    try:
        doc: Any = msgpack.unpackb(plain, raw=False)
        return LeaseInfo(
            id=str(doc["id"]),
            name=str(doc["name"]),
            hostname=str(doc["hostname"]),
            pid=int(doc["pid"]),
            started=float(doc["started"]),
            expires=float(doc["expires"]),
        )
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"{name}: malformed writer lease ({exc})") from None


class WriterLease:
    """Holds a lease object alive with a daemon thread until :meth:`release`."""

    def __init__(
        self, backend: Backend, encryption_key: bytes, lease_id: str, name: str, timeout: float
    ) -> None:
        self.backend = backend
        self.key = encryption_key
        self.id = lease_id
        self.object_name = WRITERS_PREFIX + lease_id
        self.name = name
        self.timeout = timeout
        self.started = time.time()
        self._valid_from = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self) -> None:
        now = time.time()
        info = LeaseInfo(
            self.id, self.name, socket.gethostname(), os.getpid(), self.started, now + self.timeout
        )
        self.backend.put(
            self.object_name,
            envelope.seal_object(self.key, envelope.KIND_WRITER_LEASE, encode_lease(info)),
        )
        self._valid_from = now

    def acquire(self) -> None:
        """Write the lease (durably) and start refreshing it."""
        self._put()
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"lease-{self.id[:8]}", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        interval = max(0.05, self.timeout / 4)
        while not self._stop.wait(interval):
            try:
                self._put()
            except RepositoryError as exc:
                log.warning("could not refresh writer lease %s: %s", self.id, exc)

    def ensure_valid(self) -> None:
        """Raise :class:`LeaseExpired` unless at least half the lease time remains."""
        if time.time() > self._valid_from + self.timeout / 2:
            raise LeaseExpired(
                f"writer lease {self.id} could not be refreshed in time (backend too slow or "
                "process stalled); nothing more is published by this writer"
            )

    def release(self) -> None:
        """Stop refreshing and delete the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete(self.object_name)


def list_leases(backend: Backend, encryption_key: bytes) -> list[LeaseInfo]:
    """Every readable lease (a lease deleted while listing is skipped)."""
    out = []
    for name in backend.list(WRITERS_PREFIX):
        try:
            data = backend.get(name)
        except RepositoryError:
            continue  # deleted between list and get: that writer has ended
        out.append(decode_lease(encryption_key, data, name))
    return out
