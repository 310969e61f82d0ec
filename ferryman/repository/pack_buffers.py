"""Pack buffers shared by a writer's threads, and their process-wide reuse."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable

from ferryman.repository import pack


def _libc_function(name: str) -> Callable[..., int] | None:
    try:  # the process's own symbols: libc is always loaded (no ldconfig lookup)
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None
    return function


_MALLOC_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# Allocations from this size up get their own mapping, returned to the system when
# freed.  glibc's default threshold grows with the largest block freed (up to 32 MiB),
# so after the first pack buffer is freed every chunk-sized buffer comes from the
# per-thread arenas, which keep it: the reference first backup peaked at 319-361 MB
# of server RSS that way, 295-319 MB with the threshold fixed at 1 MiB.  A restore
# (decompressed chunks) did the same: an engine-direct reference restore's walk
# process peaked at 137 MB PSS, 96 MB with the threshold fixed.  It is fixed when a
# process opens a repository (``Repository``): every writer and restore needs one, and
# a forked child inherits the setting.
MMAP_THRESHOLD = 1 << 20
_threshold_fixed = False


def fix_mmap_threshold() -> None:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` (once per process; an explicit
    ``MALLOC_MMAP_THRESHOLD_`` in the environment is left alone)."""
    global _threshold_fixed
    if _threshold_fixed:
        return
    _threshold_fixed = True
    if _MALLOPT is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def return_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``).

    A long-running proxy otherwise keeps the high-water mark of its last backup
    (freed chunk and pack buffers stay in malloc's arenas) for every later task.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class BufferPool:
    """Process-wide reuse of pack buffers: fresh memory costs page faults on every pack.

    Buffers are kept only while some writer is open: when the last one closes they
    are dropped, so an idle proxy does not hold ~80 MiB of pack buffers.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        self._writers = 0

    def kept(self) -> int:
        """Number of buffers kept for reuse."""
        with self._lock:
            return len(self._free)

    def writer_opened(self) -> None:
        """A writer started using the pool."""
        with self._lock:
            self._writers += 1

    def writer_closed(self) -> None:
        """A writer closed; the last one drops the kept buffers and trims the heap."""
        with self._lock:
            self._writers = max(0, self._writers - 1)
            idle = self._writers == 0
            if idle:
                self._free.clear()
        if idle:
            return_free_memory()

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
