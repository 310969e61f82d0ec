"""The supervisor of hosts without systemd: restarts a failed proxy, stops it on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def wait_for(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restarts_on_failure_reads_env_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env_file = tmp_path / "proxy.env"
    env_file.write_text("FERRYMAN_JOIN_TOKEN=first\n")
    # first run fails; later runs record the token they saw and stay up
    child = (
        "import os, sys, time, pathlib; p = pathlib.Path(sys.argv[1]); "
        "n = len(p.read_text().splitlines()) if p.exists() else 0; "
        "p.open('a').write(os.environ['FERRYMAN_JOIN_TOKEN'] + '\\n'); "
        "sys.exit(3) if n == 0 else time.sleep(600)"
    )
    pid_file = tmp_path / "run" / "supervisor.pid"
    pid_file.parent.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferryman.proxy.supervise",
            "--pid-file",
            str(pid_file),
            "--env-file",
            str(env_file),
            "--",
            sys.executable,
            "-c",
            child,
            str(runs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) == 1)
        env_file.write_text("FERRYMAN_JOIN_TOKEN=second\n")  # re-read before the restart
        wait_for(lambda: len(runs.read_text().splitlines()) == 2)
        assert runs.read_text().splitlines() == ["first", "second"]
        assert int(pid_file.read_text()) == proc.pid
        child_pid = int((pid_file.parent / "proxy.pid").read_text())
        assert alive(child_pid)

        # a second supervisor with the same pid file does not start another proxy
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "ferryman.proxy.supervise",
                "--pid-file",
                str(pid_file),
                "--",
                "false",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 0 and "already running" in again.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not alive(child_pid)
        assert not pid_file.exists() and not (pid_file.parent / "proxy.pid").exists()
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "proxy exited with 3; restarting" in output
    finally:
        if proc.poll() is None:
            proc.kill()
