"""Fallback: Ferryman's engine called directly, NOT through the server and proxy.

Each step is one child process (``bench.tools.engine_task``) that opens the
local repository and runs ``ferryman.engine`` on the share. It measures the
data path only — no control plane, no task dispatch, no proxy — and is
labelled "engine-direct (not through server)" wherever its figures appear.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.tools.base import CommandLog, command_version

LABEL = "engine-direct (not through server)"


class FerrymanEngineDirect:
    name = "ferryman"
    slug = "ferryman-engine"  # its own folder: the CLI driver's log stays readable

    def __init__(self) -> None:
        self._log: CommandLog | None = None
        self._repo = Path()
        self._cache = Path()
        self._source = Path()
        self.last_detail = ""

    def describe(self) -> str:
        version = command_version(
            [sys.executable, "-c", "import ferryman; print(ferryman.__version__)"]
        )
        return f"ferryman {version} {LABEL}: engine → local repository"

    def _task(self, *args: str) -> None:
        assert self._log is not None, "setup() first"
        cmd = [sys.executable, "-m", "bench.tools.engine_task", *args]
        out = self._log.run(cmd, cwd=Path(__file__).resolve().parents[2]).stdout.strip()
        last = out.splitlines()[-1] if out else ""
        try:
            self.last_detail = json.dumps(json.loads(last))
        except ValueError:
            self.last_detail = last

    def setup(self, workdir: Path, source: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._repo = workdir / "ferryman-repo"
        self._cache = workdir / "ferryman-cache"
        self._source = source
        self._log = CommandLog(workdir / "ferryman-engine.log")
        self._task("init", str(self._repo), str(self._cache))

    def backup(self) -> None:
        self._task("backup", str(self._repo), str(self._cache), str(self._source))

    def restore(self, target: Path) -> None:
        self._task("restore", str(self._repo), str(self._cache), str(target))

    def repository(self) -> Path:
        return self._repo

    def background_pids(self) -> list[int]:
        return []

    def teardown(self) -> None:
        pass
