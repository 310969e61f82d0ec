"""The storage backend protocol: a flat namespace of immutable objects.

Names are relative ``/``-separated keys such as ``config`` or ``data/ab/abcd...``.
``put`` is atomic: a reader sees the whole object or nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    """What the repository needs from a storage location."""

    def get(self, name: str) -> bytes:
        """Whole object; raises ``ObjectNotFound``."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        ...

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Store atomically, replacing any previous object of that name."""
        ...

    def delete(self, name: str) -> None:
        """Remove; deleting a missing object is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Names starting with ``prefix`` (any order)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        ...

    def size(self, name: str) -> int:
        """Object size in bytes; raises ``ObjectNotFound``."""
        ...

    def describe(self) -> str:
        """Where this backend stores objects, for messages."""
        ...


def check_name(name: str) -> str:
    """Refuse names that could escape the repository root."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object name {name!r}")
    return name


@dataclass
class BackendStats:
    """Request counters of one backend (thread-safe increments)."""

    gets: int = 0
    range_gets: int = 0
    puts: int = 0
    deletes: int = 0
    lists: int = 0
    heads: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Increment the named counters."""
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters as a plain dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


class CountingBackend:
    """Wraps a backend and counts its requests and bytes in :class:`BackendStats`."""

    def __init__(self, inner: Backend, stats: BackendStats | None = None) -> None:
        self.inner = inner
        self.stats = stats if stats is not None else BackendStats()

    def get(self, name: str) -> bytes:
        data = self.inner.get(name)
        self.stats.add(gets=1, bytes_read=len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.get_range(name, offset, length)
        self.stats.add(range_gets=1, bytes_read=len(data))
        return data

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put(name, data)
        self.stats.add(puts=1, bytes_written=len(data))

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        self.stats.add(deletes=1)

    def list(self, prefix: str) -> Iterator[str]:
        self.stats.add(lists=1)
        return self.inner.list(prefix)

    def exists(self, name: str) -> bool:
        self.stats.add(heads=1)
        return self.inner.exists(name)

    def size(self, name: str) -> int:
        self.stats.add(heads=1)
        return self.inner.size(name)

    def describe(self) -> str:
        return self.inner.describe()
