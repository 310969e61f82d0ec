"""The garbage collector's thresholds while engine tasks run in this process."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation threshold while a backup or restore runs (Python's default is 700). A re-run
# allocates a dict per previous entry; in a proxy embedded in the server, the
# collections that follow (each tenth of a tenth a full one over the server's whole
# heap) took 0.05-0.4 s of a reference re-run's ~1-2 CPU s; with 50,000 none ran.
GC_YOUNG_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def rarer_gc() -> Iterator[None]:
    """Raise the garbage collector's young threshold while any backup or restore of this
    process runs (tasks may overlap: the first in raises it, the last out restores it)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], GC_YOUNG_THRESHOLD), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
