"""The garbage collector's thresholds while engine tasks run in this process."""

from __future__ import annotations

import gc

from ferryman.engine.task_settings import TaskSetting

# Young-generation threshold while a backup or restore runs (Python's default is 700). A re-run
# allocates a dict per previous entry; in a proxy embedded in the server, the
# collections that follow (each tenth of a tenth a full one over the server's whole
# heap) took 0.05-0.4 s of a reference re-run's ~1-2 CPU s; with 50,000 none ran.
GC_YOUNG_THRESHOLD = 50_000

rarer_gc = TaskSetting(
    gc.get_threshold,
    lambda saved: gc.set_threshold(max(saved[0], GC_YOUNG_THRESHOLD), *saved[1:]),
    lambda saved: gc.set_threshold(*saved),
)
"""Raise the garbage collector's young threshold while any backup or restore of this
process runs: ``with rarer_gc(): ...``."""
