"""The interpreter's thread switch interval while backups run in this process.

A backup's threads hand the GIL back and forth: the scanner and the tree saver run
Python code, while the large-file reader and the saver threads run native work
(FastCDC, BLAKE3, zstd, AES-GCM, SQLite) of ~0.1-1 ms with the GIL released and
then need it back to go on. A thread wanting the GIL waits until the holder drops
it, which a thread running Python code does only after the switch interval (5 ms
by default): each chunk of a large file then waited up to 5 ms per native call,
longer than the call itself. Measured on this machine kind: cutting and hashing
128 MiB took 0.12 s alone and 0.39-0.50 s beside one busy Python thread with
5 ms, 0.25 s with 0.5 ms.
"""

from __future__ import annotations

import sys

from ferryman.engine.task_settings import TaskSetting

SWITCH_INTERVAL = 0.0005  # seconds

shorter_switch_interval = TaskSetting(
    sys.getswitchinterval,
    lambda saved: sys.setswitchinterval(min(saved, SWITCH_INTERVAL)),
    sys.setswitchinterval,
)
"""Lower the switch interval to ``SWITCH_INTERVAL`` (never raise it) while any backup
of this process runs: ``with shorter_switch_interval(): ...``."""
