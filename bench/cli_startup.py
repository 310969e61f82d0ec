"""Start-up cost of the ``ferryman`` command: median wall and CPU of N runs per source tree.

    git archive <commit> ferryman | tar -x -C /tmp/before      # a tree to compare with
    .venv/bin/python -m bench.cli_startup --trees /tmp/before,. -n 15 -- job run --help
    .venv/bin/python -m bench.cli_startup -n 15 -- --home H job run NAME --follow

Each tree is a folder holding a ``ferryman`` package; the trees take turns run by run,
so both see the same machine load. The editable install's import hook is switched off
in the child so that the tree given, not the checkout, is imported. Runs whose exit
code is not 0 are counted too (``--help`` exits 0; a usage error would not).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, sys.argv.pop(1))
sys.argv[0] = "ferryman"
from ferryman.cli.main import main
main()
"""


def measure(tree: Path, args: list[str]) -> tuple[float, float, int]:
    """Wall ms, CPU ms (user + system) and exit code of one ``ferryman ARGS`` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=".", help="comma-separated folders (default: .)")
    parser.add_argument("-n", type=int, default=15, help="runs per tree (default 15)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- ferryman arguments")
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    trees = [Path(t).resolve() for t in options.trees.split(",")]
    runs: dict[Path, list[tuple[float, float, int]]] = {tree: [] for tree in trees}
    for _ in range(options.n):
        for tree in trees:
            runs[tree].append(measure(tree, args))
    print(f"ferryman {' '.join(args)}  (n={options.n}, load {os.getloadavg()[0]:.1f})")
    for tree, results in runs.items():
        walls = [r[0] for r in results]
        cpus = [r[1] for r in results]
        codes = sorted({r[2] for r in results})
        print(
            f"  {tree!s:40} wall median {statistics.median(walls):5.0f} ms "
            f"(min {min(walls):4.0f})  CPU median {statistics.median(cpus):5.0f} ms  "
            f"exit {codes}"
        )


if __name__ == "__main__":
    main()
