"""What the restore-worker programs of ``test_restore_procs`` share.

Each of those programs runs as its own main module in a child process (as the
server's script does: the fork server preloads it) and imports this from ``main()``:
a backed-up tree of small files in a few folders, restored in several batches so
that both worker processes take some, and each restore compared file by file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferryman.engine import restore_walk
from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, open_backend
from ferryman.sources.local import LocalSource


@dataclass(frozen=True)
class BackedUp:
    repo: Repository
    point: str
    src: Path
    paths: list[str]

    def restore_checked(self, target: Path) -> None:
        """Restore through 2 worker processes into ``target``; every file as backed up."""
        result = run_restore(self.repo, self.point, target, RestoreOptions(processes=2))
        assert result.status == "success", result
        assert result.stats.files_restored == len(self.paths), result
        for path in self.paths:
            assert (target / path).read_bytes() == (self.src / path).read_bytes(), path


def backed_up(base: Path, files: int = 12, folders: int = 3) -> BackedUp:
    """``files`` small random files in ``folders`` folders under ``base/src``, backed up
    into a new repository in ``base``; restores go to worker processes from the first
    file, two files a batch."""
    restore_walk.PROCESS_AFTER_FILES = 0
    restore_walk.BATCH_FILES = 2  # several batches: both workers take some
    src = base / "src"
    paths = [f"d{i % folders}/f{i}" for i in range(files)]
    for i, path in enumerate(paths):
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(os.urandom(100 + i))
    repo = Repository.init(
        open_backend(str(base / "repo")), "pw", scrypt_n=1 << 10, cache_dir=base / "cache"
    )
    point = run_backup(LocalSource(src), repo, BackupOptions(share="s")).restore_point
    assert point is not None
    return BackedUp(repo, point, src, paths)
