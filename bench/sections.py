"""Extra sections: the micro-benchmarks other helpers keep in ``bench/<area>/``.

A section is a package ``bench/repository``, ``bench/engine`` or ``bench/sources``; it runs as
``python -m bench.<area>`` when it has a ``__main__.py``, otherwise each of its
public modules runs as ``python -m bench.<area>.<module>`` (except a module with
the line ``SECTION = False``: a standalone command, too long for ``make bench``).
Its output is shown as is and kept in the results file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

AREAS = ("repository", "engine", "sources")
TIMEOUT = 900
STANDALONE_MARK = "SECTION = False"


def _modules(area_dir: Path) -> list[str]:
    area = area_dir.name
    if (area_dir / "__main__.py").exists():
        return [f"bench.{area}"]
    return [
        f"bench.{area}.{p.stem}"
        for p in sorted(area_dir.glob("*.py"))
        if not p.name.startswith("_")
        and not p.name.startswith("test")
        and STANDALONE_MARK not in p.read_text().splitlines()
    ]


def run_extra_sections(console: Console, bench_dir: Path) -> dict[str, dict[str, object]]:
    """Run every section present; returns {module: {returncode, output}}."""
    found: dict[str, dict[str, object]] = {}
    for area in AREAS:
        area_dir = bench_dir / area
        if not area_dir.is_dir():
            continue
        for module in _modules(area_dir):
            console.print(f"\n[bold]section {module}[/bold]")
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", module],
                    cwd=bench_dir.parent,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                    check=False,
                )
                output, code = proc.stdout + proc.stderr, proc.returncode
            except subprocess.TimeoutExpired as exc:
                partial = (
                    exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
                )
                output, code = f"timed out after {TIMEOUT} s\n{partial}", -1
            console.print(output.rstrip(), markup=False, highlight=False)
            if code != 0:
                console.print(f"section {module} FAILED (exit {code})", markup=False)
            found[module] = {"returncode": code, "output": output}
    return found
