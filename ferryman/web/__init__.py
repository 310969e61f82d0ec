"""The web console: static files (HTML, ES modules, CSS) the backup server serves at ``/``."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
