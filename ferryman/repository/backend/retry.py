"""A backend wrapper that retries transient failures with exponential backoff and jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ferryman.repository.backend.base import Backend
from ferryman.repository.errors import TransientBackendError

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryingBackend:
    """Retries operations of ``inner`` that raise :class:`TransientBackendError`."""

    def __init__(
        self, inner: Backend, *, attempts: int = 5, base_delay: float = 0.2, max_delay: float = 10.0
    ) -> None:
        self.inner = inner
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientBackendError as exc:
                if attempt == self.attempts:
                    raise
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
                log.warning("%s failed (%s); retry %d in %.1fs", what, exc, attempt, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def describe(self) -> str:
        return self.inner.describe()

    def get(self, name: str) -> bytes:
        return self._call(f"get {name}", lambda: self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._call(f"get {name}", lambda: self.inner.get_range(name, offset, length))

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._call(f"put {name}", lambda: self.inner.put(name, data))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self.inner.delete(name))

    def list(self, prefix: str) -> Iterator[str]:
        # Materialized so a retry never yields a name twice.
        names = self._call(f"list {prefix}", lambda: list(self.inner.list(prefix)))
        return iter(names)

    def exists(self, name: str) -> bool:
        return self._call(f"stat {name}", lambda: self.inner.exists(name))

    def size(self, name: str) -> int:
        return self._call(f"stat {name}", lambda: self.inner.size(name))
