"""borgbackup, with its defaults: ``init -e repokey``, passphrase in BORG_PASSPHRASE."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.tools.base import CommandLog, command_version

PASSPHRASE = "ferryman-bench-borg"


class Borg:
    name = "borg"

    def __init__(self) -> None:
        self._log: CommandLog | None = None
        self._repo = Path()
        self._source = Path()
        self._archives = 0
        self.last_detail = ""

    def describe(self) -> str:
        return command_version(["borg", "--version"])

    def setup(self, workdir: Path, source: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._repo = workdir / "borg-repo"
        self._source = source
        self._log = CommandLog(
            workdir / "borg.log",
            {
                "BORG_REPO": str(self._repo),
                "BORG_PASSPHRASE": PASSPHRASE,
                # cache, keys and security data inside the bench folder, not ~/.cache
                "BORG_BASE_DIR": str(workdir / "borg-base"),
            },
        )
        self._run(["borg", "init", "-e", "repokey"])

    def _run(self, args: list[str], cwd: Path | None = None) -> None:
        assert self._log is not None, "setup() first"
        proc = self._log.run(args, cwd=cwd, ok_codes=(0, 1))
        self.last_detail = "warnings (exit 1): see borg.log" if proc.returncode == 1 else ""

    def backup(self) -> None:
        self._archives += 1
        self._run(["borg", "create", f"::bench-{self._archives}", "."], cwd=self._source)

    def restore(self, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self._run(["borg", "extract", f"::bench-{self._archives}"], cwd=target)

    def repository(self) -> Path:
        return self._repo

    def background_pids(self) -> list[int]:
        return []

    def teardown(self) -> None:
        pass


def available() -> bool:
    return shutil.which("borg") is not None
