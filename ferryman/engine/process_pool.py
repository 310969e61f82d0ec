"""Worker process pools of a task (saver processes, restore writers)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
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


def forked_pool(
    processes: int, init: Callable[[S], None], setup: S, preload: Iterable[str]
) -> ProcessPoolExecutor:
    """``processes`` workers forked from multiprocessing's fork server, each running
    ``init(setup)`` first.

    A spawned worker is a new interpreter that imports the engine, the repository and
    their libraries again: ~0.15-0.3 s of CPU per worker, per task (more where no
    bytecode cache is written). The fork server is one single-threaded process,
    spawned with the first such pool of the process and kept until the process exits;
    it imports ``preload`` once and every worker is a fork of it: the same safety as
    ``spawn`` (never a fork of a threaded server) without the start-up. A worker still
    runs the parent's main module (CPython 3.11's fork server does not preload it),
    cheap once the modules it imports are loaded. ``preload`` counts only for the pool
    that starts the fork server; a later pool's other modules are imported by its
    workers.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *preload])
    return ProcessPoolExecutor(processes, mp_context=context, initializer=init, initargs=(setup,))
