"""restic, with its defaults: a local repository and a password file."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.tools.base import CommandLog, command_version

PASSWORD = "ferryman-bench-restic"


class Restic:
    name = "restic"

    def __init__(self) -> None:
        self._log: CommandLog | None = None
        self._repo = Path()
        self._source = Path()
        self.last_detail = ""

    def describe(self) -> str:
        return command_version(["restic", "version"])

    def setup(self, workdir: Path, source: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        password = workdir / "restic-password"
        password.write_text(PASSWORD + "\n")
        self._repo = workdir / "restic-repo"
        self._source = source
        self._log = CommandLog(
            workdir / "restic.log",
            {
                "RESTIC_REPOSITORY": str(self._repo),
                "RESTIC_PASSWORD_FILE": str(password),
                "RESTIC_CACHE_DIR": str(workdir / "restic-cache"),
            },
        )
        self._run(["restic", "init"])

    def _run(self, args: list[str], cwd: Path | None = None) -> None:
        assert self._log is not None, "setup() first"
        proc = self._log.run(args, cwd=cwd, ok_codes=(0, 3))
        self.last_detail = "some files unreadable (exit 3)" if proc.returncode == 3 else ""

    def backup(self) -> None:
        # "." from inside the share stores its contents at the snapshot root
        self._run(["restic", "backup", "."], cwd=self._source)

    def restore(self, target: Path) -> None:
        self._run(["restic", "restore", "latest", "--target", str(target)])

    def repository(self) -> Path:
        return self._repo

    def background_pids(self) -> list[int]:
        return []

    def teardown(self) -> None:
        pass


def available() -> bool:
    return shutil.which("restic") is not None
