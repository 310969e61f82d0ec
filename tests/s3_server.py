"""A moto S3 server in its own process on loopback, on a port from ``loopback_ports``.

Imported as ``s3_server`` (``tests/`` is on ``sys.path``, as ``loopback_ports``) by the
shared ``s3_endpoint`` fixture and by the S3 source tests' signature-checking server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from loopback_ports import ADDRESS_IN_USE, PortTaken, on_free_port


def start_moto(log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A moto server started with ``env``, its output in ``log``, answering at the URL
    returned; started again on another port when its own was taken first. It FAILS
    (not skips) under CI=true when moto does not start."""
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]

    def start(port: int) -> tuple[subprocess.Popen[bytes], str]:
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=logf, stderr=logf, env=env
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                return proc, url
            except OSError:
                if proc.poll() is not None and ADDRESS_IN_USE in log.read_text(errors="replace"):
                    raise PortTaken(port) from None
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    message = f"moto S3 server did not start: {log.read_text()[-2000:]}"
                    if os.environ.get("CI") == "true":
                        pytest.fail(message)
                    pytest.skip(message)
                time.sleep(0.2)

    started: tuple[subprocess.Popen[bytes], str] = on_free_port(start)
    return started
