"""A minimal supervisor for hosts without systemd: restarts the proxy when it fails.

`python -m ferryman.proxy.supervise --pid-file P --env-file E -- COMMAND...` runs COMMAND,
re-reading E (KEY=VALUE lines) before each start, restarts it with a growing delay when it
exits with an error, and on SIGTERM/SIGINT forwards the signal, waits for it to end and
exits. Installed by `ferryman proxy deploy`; see docs/architecture.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STOP_TIMEOUT = 60.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a run this long resets the restart delay


def read_env_file(path: Path | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if path is None or not path.exists():
        return env
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            env[key] = value
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_pid_file(path: Path) -> bool:
    if path.exists():
        try:
            pid = int(path.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _alive(pid):
            return False
    path.write_text(f"{os.getpid()}\n")
    return True


def supervise(command: list[str], pid_file: Path, env_file: Path | None) -> int:
    if not _claim_pid_file(pid_file):
        print(f"already running (pid file {pid_file})", file=sys.stderr)
        return 0
    child_file = pid_file.with_name("proxy.pid")
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()
        if child and child[0].poll() is None:
            child[0].send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    delay = 1.0
    code = 0
    try:
        while not stopping.is_set():
            env = dict(os.environ)
            env.update(read_env_file(env_file))
            started = time.monotonic()
            proc = subprocess.Popen(command, env=env)
            child[:] = [proc]
            child_file.write_text(f"{proc.pid}\n")
            while True:
                try:
                    code = proc.wait(STOP_TIMEOUT if stopping.is_set() else None)
                    break
                except subprocess.TimeoutExpired:
                    proc.kill()
            if stopping.is_set() or code == 0:
                break
            if time.monotonic() - started > STABLE_AFTER:
                delay = 1.0
            print(f"supervise: proxy exited with {code}; restarting in {delay:.0f}s", flush=True)
            stopping.wait(delay)
            delay = min(delay * 2, MAX_DELAY)
    finally:
        for path in (child_file, pid_file):
            path.unlink(missing_ok=True)
    return 0 if stopping.is_set() else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferryman.proxy.supervise")
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    return supervise(args.command, args.pid_file, args.env_file)


if __name__ == "__main__":
    sys.exit(main())
