"""Pack buffers shared by a writer's threads, and their process-wide reuse."""

from __future__ import annotations

import threading

from ferryman.repository import pack


class BufferPool:
    """Process-wide reuse of pack buffers: fresh memory costs page faults on every pack."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, capacity: int) -> bytearray:
        """A buffer of exactly ``capacity`` bytes (recycled when possible)."""
        with self._lock:
            for i, buf in enumerate(self._free):
                if len(buf) == capacity:
                    return self._free.pop(i)
        return bytearray(capacity)

    def give(self, buffer: bytearray) -> None:
        """Return a buffer for reuse (kept only up to ``keep`` buffers)."""
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)


POOL = BufferPool()


class OpenPack:
    """A pack being filled, with the number of threads currently writing into it."""

    def __init__(self, builder: pack.PackBuilder, pooled: bool) -> None:
        self.builder = builder
        self.pooled = pooled
        self.users = 0
        self.closing = False
        self.submitted = False
