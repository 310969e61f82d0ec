"""Which Ferryman driver to use: the real CLI path, or the engine-direct fallback."""

from __future__ import annotations

import importlib.util

from bench.tools.base import BackupTool
from bench.tools.ferryman import FerrymanCli


def engine_ready() -> bool:
    try:
        return importlib.util.find_spec("ferryman.engine.backup") is not None
    except ModuleNotFoundError:
        return False


def ferryman_candidates(driver: str, proxy: str = "embedded") -> list[BackupTool]:
    """Drivers to try in order: ``cli``, ``engine``, or ``auto`` (the CLI, then the engine).

    With ``auto`` the engine-direct driver is used only when the CLI path cannot
    even be set up (server not there yet); the report says so. ``proxy``: the CLI
    path's proxy, the server's ``embedded`` one or a ``standalone`` ``proxy run``.
    """
    from bench.tools.ferryman_engine import FerrymanEngineDirect

    if driver == "cli":
        return [FerrymanCli(proxy)]
    if driver == "engine":
        return [FerrymanEngineDirect()]
    return [FerrymanCli(proxy), *([FerrymanEngineDirect()] if engine_ready() else [])]
