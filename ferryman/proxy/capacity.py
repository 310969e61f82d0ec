"""How many tasks this host can run at once: from CPU cores and memory, overridable."""

from __future__ import annotations

import os

# a task's working set target (see QUALITY.md: <= 300 MB per task) plus headroom
MEMORY_PER_SLOT = 512 * 1024**2
RESERVED_MEMORY = 512 * 1024**2


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def default_slots() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    slots = max(1, cores or 1)
    memory = available_memory()
    if memory is not None:
        slots = min(slots, max(1, (memory - RESERVED_MEMORY) // MEMORY_PER_SLOT))
    return int(slots)
