"""The interface every tool driver implements, and running its commands."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol


class ToolError(RuntimeError):
    """A tool's command failed; the message carries the end of its output."""


class BackupTool(Protocol):
    """A backup program driven by the harness.

    ``setup`` (not measured) prepares an empty repository for ``source``;
    ``backup`` backs ``source`` up once; ``restore`` restores the latest backup
    into the empty folder ``target``. All processes a step needs must be
    children of the harness process, so their memory is sampled.
    """

    name: str

    def describe(self) -> str:
        """Name, version and how it is driven, for the report."""
        ...

    def setup(self, workdir: Path, source: Path) -> None: ...

    def backup(self) -> None: ...

    def restore(self, target: Path) -> None: ...

    def repository(self) -> Path:
        """The folder whose size on disk is the repository size."""
        ...

    def background_pids(self) -> list[int]:
        """Processes the tool keeps running between steps (a server), else []."""
        ...

    def teardown(self) -> None: ...


class CommandLog:
    """Runs a tool's commands, appending their output to one log file."""

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.env = {**os.environ, **(env or {})}

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; raise ``ToolError`` with the output's end if it fails.

        ``ok_codes``: exit codes that mean "done" (borg exits 1 on warnings,
        restic 3 when some files could not be read).
        """
        with open(self.path, "a") as log:
            log.write(f"\n$ {' '.join(map(str, args))}\n")
            log.flush()
            proc = subprocess.run(
                [str(a) for a in args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                check=False,
            )
            log.write(proc.stdout)
        if proc.returncode not in ok_codes:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise ToolError(
                f"{' '.join(map(str, args[:4]))} … exited with {proc.returncode}:\n{tail}"
            )
        return proc

    def start(self, args: Sequence[str | os.PathLike[str]]) -> subprocess.Popen[bytes]:
        """Start a long-running process (a server) with its output in the log."""
        log = open(self.path, "ab")  # noqa: SIM115 - stays open for the child's life
        log.write(f"\n$ {' '.join(map(str, args))} &\n".encode())
        log.flush()
        return subprocess.Popen(
            [str(a) for a in args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def command_version(args: Sequence[str]) -> str:
    """First line of a ``--version`` style command, or "unknown"."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"
