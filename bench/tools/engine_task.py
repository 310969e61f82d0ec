"""Child process of the engine-direct fallback: one engine call per invocation.

    python -m bench.tools.engine_task init|backup|restore REPO CACHE [SOURCE|POINT TARGET]

Runs ``ferryman.engine`` against a local repository without the server and
proxy, so the harness can measure the data path while the control plane is not
there yet. Prints one JSON line with the engine's result.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, is_dataclass
from typing import Any

PASSPHRASE = "ferryman-bench-engine"
SHARE = "bench"


def _json(value: Any) -> str:
    def default(o: Any) -> Any:
        if is_dataclass(o) and not isinstance(o, type):
            return asdict(o)
        if isinstance(o, bytes):
            return o.hex()
        return str(o)

    return json.dumps(value, default=default)


def main(argv: list[str]) -> int:
    from ferryman.repository import Repository, open_backend

    action, repo_path, cache = argv[0], argv[1], argv[2]
    os.makedirs(repo_path, exist_ok=True)
    backend = open_backend(repo_path)
    if action == "init":
        Repository.init(backend, PASSPHRASE, cache_dir=cache).close()
        return 0
    with Repository.open(backend, PASSPHRASE, cache_dir=cache) as repo:
        if action == "backup":
            from ferryman.engine.backup import run_backup
            from ferryman.engine.options import BackupOptions
            from ferryman.sources.local import LocalSource

            result: Any = run_backup(LocalSource(argv[3]), repo, BackupOptions(share=SHARE))
            print(_json({"status": result.status, "bottleneck": result.bottleneck}))
        elif action == "restore":
            from ferryman.engine.options import RestoreOptions
            from ferryman.engine.restore import run_restore
            from ferryman.sources.local import LocalRestoreTarget

            points = [p for p in repo.list_restore_points() if p.share == SHARE]
            if not points:
                print("no restore point", file=sys.stderr)
                return 1
            latest = max(points, key=lambda p: p.time)
            os.makedirs(argv[3], exist_ok=True)
            result = run_restore(repo, latest.id, LocalRestoreTarget(argv[3]), RestoreOptions())
            print(_json({"status": result.status}))
            if result.status == "failed":
                return 1
        else:
            print(f"unknown action {action!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
