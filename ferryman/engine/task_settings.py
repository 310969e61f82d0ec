"""Process-wide interpreter settings changed while engine tasks run in this process.

Tasks may overlap in one proxy: the first task in saves the setting and applies the
task value, the last one out puts the saved value back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class TaskSetting(Generic[T]):
    """One setting: ``read`` gives the current value, ``tune(saved)`` applies the task
    value (never a worse one than ``saved``), ``restore(saved)`` puts it back."""

    def __init__(
        self,
        read: Callable[[], T],
        tune: Callable[[T], None],
        restore: Callable[[T], None],
    ) -> None:
        self._read, self._tune, self._restore = read, tune, restore
        self._lock = threading.Lock()
        self._users = 0
        self._saved: T | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = saved = self._read()
                self._tune(saved)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._saved is not None:
                    self._restore(self._saved)
