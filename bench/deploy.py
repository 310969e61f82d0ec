"""Deployment time of a proxy over SSH on loopback, with the wheelhouse cached.

Starts its own sshd (root key login on a free loopback port, as the integration tests
do) and a server without embedded proxy, builds the wheelhouse once (reported, not part
of the target), then times `ferryman proxy deploy` from the command to "proxy online"
on a clean host N times (uninstalling in between), and a no-op re-deploy.

    .venv/bin/python -m bench.deploy [--runs 3] [--install-dir DIR] [--wheelhouse DIR]

Needs root and openssh-server. Target (QUALITY.md): <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the test harness imports its port helper as the tests do (tests/ on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tests.integration.harness import ServerProcess
from tests.integration.sshd import start_sshd, stop_sshd

TARGET_SECONDS = 10.0
RESULTS = Path(__file__).resolve().parent / "results"


def _cli(server: ServerProcess, *args: str) -> tuple[float, str]:
    env = {
        **os.environ,
        "FERRYMAN_SERVER": server.url,
        "FERRYMAN_TOKEN": server.token,
        "FERRYMAN_CA": server.ca,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ferryman.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"ferryman {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def _steps(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w[\w ]*?) +(\d+\.\d+)s", output, re.M)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--install-dir", help="install folder on the host (default: root's)")
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=Path(__file__).resolve().parent / "work" / "deploy-wheelhouse",
    )
    args = parser.parse_args(argv)
    args.wheelhouse.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ferryman-bench-deploy-"))
    sshd = start_sshd(tmp / "sshd")
    server = ServerProcess(
        tmp / "server", None, embedded=False, env={"FERRYMAN_WHEELHOUSE_DIR": str(args.wheelhouse)}
    ).start()
    key = str(sshd.client_key)
    deploy = ["proxy", "deploy", sshd.url("root"), "--identity", key, "--name", "bench"]
    if args.install_dir:
        deploy += ["--install-dir", args.install_dir]
    remove = ["proxy", "remove", "bench", "--uninstall", "--identity", key]
    results: dict[str, Any] = {"target_seconds": TARGET_SECONDS, "runs": []}
    try:
        first, out = _cli(server, *deploy, "--trust-host-key")
        results["first_with_wheelhouse_step"] = {"seconds": round(first, 2), "steps": _steps(out)}
        _cli(server, *remove)
        for _ in range(args.runs):
            seconds, out = _cli(server, *deploy)
            results["runs"].append({"seconds": round(seconds, 2), "steps": _steps(out)})
            noop, _ = _cli(server, *deploy)
            results["runs"][-1]["redeploy_noop_seconds"] = round(noop, 2)
            _cli(server, *remove)
    finally:
        server.kill()
        stop_sshd(sshd)
    times = [r["seconds"] for r in results["runs"]]
    best, median = min(times), statistics.median(times)
    results.update(best=best, median=median)
    first = results["first_with_wheelhouse_step"]
    print(
        f"first deploy: {first['seconds']:.1f}s "
        f"(wheelhouse step {first['steps'].get('wheelhouse', 0):.1f}s: built or cached)"
    )
    print(
        f"deploy, wheelhouse cached, command -> proxy online: best {best:.2f}s, "
        f"median {median:.2f}s over {len(times)} run(s); target <= {TARGET_SECONDS:.0f}s: "
        f"{'MET' if median <= TARGET_SECONDS else 'MISSED'}"
    )
    best_run = min(results["runs"], key=lambda r: r["seconds"])
    print(
        "  steps of the best run: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in best_run["steps"].items())
    )
    print(
        "  no-op re-deploy: "
        + ", ".join(f"{r['redeploy_noop_seconds']:.2f}s" for r in results["runs"])
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("deploy-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
