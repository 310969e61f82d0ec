"""The ports the tests' servers are started on (``loopback_ports``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from cli.installation import new_installation  # tests/ is on sys.path (rootdir-relative)

HERE = Path(__file__).parent
# each worker's first pick the same (one random seed): two workers drawing from one
# range would then hand out the same ports every time, not only by chance
PORTS = (
    "import random; random.seed(0); import loopback_ports as p; "
    "print(*[p.free_port() for _ in range(200)])"
)


def test_xdist_workers_never_hand_out_the_same_port() -> None:
    """Three xdist workers each hand out 200 ports: no port twice, none shared between
    workers, none in the kernel's ephemeral range (where bind-to-0 and every outgoing
    connection take their ports)."""
    drawn = {}
    for worker in ("gw0", "gw1", "gw2"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTHONPATH": str(HERE)}
        done = subprocess.run(
            [sys.executable, "-c", PORTS], capture_output=True, text=True, env=env, check=True
        )
        drawn[worker] = [int(p) for p in done.stdout.split()]
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low, high = int(ephemeral[0]), int(ephemeral[1])
    for worker, ports in drawn.items():
        assert len(set(ports)) == 200, worker
        assert all(1024 < p < low or p > high for p in ports), (worker, ports)
    assert not set(drawn["gw0"]) & set(drawn["gw1"])
    assert not set(drawn["gw0"]) & set(drawn["gw2"])
    assert not set(drawn["gw1"]) & set(drawn["gw2"])


def test_a_server_whose_port_is_taken_after_init_runs_on_another(tmp_path: Path) -> None:
    """Another program binds the port between ``server init`` and ``server run`` (what
    another worker's server did with a bind-then-close port): the installation runs on
    the next free port, and the CLI reaches it there."""
    installation = new_installation(tmp_path)
    taken = installation.port
    with socket.create_server(("127.0.0.1", taken)) as squatter:
        # the other program hangs up on whoever calls (the CLI probing for the server)
        threading.Thread(target=_hang_up, args=(squatter,), daemon=True).start()
        try:
            installation.start()
            assert installation.port != taken
            client = json.loads((installation.home / "client.json").read_text())
            assert client["server"] == f"https://127.0.0.1:{installation.port}"
            assert [p["state"] for p in installation.json("proxy", "list")] == ["online"]
        finally:
            installation.stop()


def _hang_up(listener: socket.socket) -> None:
    while True:
        try:
            listener.accept()[0].close()
        except OSError:  # closed
            return
