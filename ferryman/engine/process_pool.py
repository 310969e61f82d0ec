"""Worker process pools of a task (saver processes, restore writers)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

S = TypeVar("S")


def spawn_pool(processes: int, init: Callable[[S], None], setup: S) -> ProcessPoolExecutor:
    """``processes`` workers started fresh, each running ``init(setup)`` first (``spawn``:
    never a fork of a threaded server, whose locks another thread may hold)."""
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init,
        initargs=(setup,),
    )
