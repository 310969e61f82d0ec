"""Which Ferryman driver to use: the real CLI path, or the engine-direct fallback."""

from __future__ import annotations

import importlib.util
import subprocess

from bench.tools.base import BackupTool
from bench.tools.ferryman import FerrymanCli, ferryman_command


def cli_ready() -> bool:
    """True when ``ferryman`` has the server, job and restore commands."""
    for args in (["server", "run", "--help"], ["job", "run", "--help"], ["restore", "--help"]):
        try:
            proc = subprocess.run(
                [*ferryman_command(), *args], capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        if proc.returncode != 0:
            return False
    return True


def engine_ready() -> bool:
    try:
        return importlib.util.find_spec("ferryman.engine.backup") is not None
    except ModuleNotFoundError:
        return False


def ferryman_tool(driver: str) -> BackupTool:
    """``cli``, ``engine``, or ``auto`` (the CLI when it is there, else the engine)."""
    if driver == "engine" or (driver == "auto" and not cli_ready() and engine_ready()):
        from bench.tools.ferryman_engine import FerrymanEngineDirect

        return FerrymanEngineDirect()
    return FerrymanCli()
