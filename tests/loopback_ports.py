"""Loopback ports for the servers the tests start on a port of their choosing.

PostgreSQL, moto, smbd, sshd, aiosmtpd and ``ferryman server`` (whose port is written
into its home at ``server init``) are told a port rather than binding port 0 and
reporting theirs. Asking the kernel for a free port (bind to 0, close) and handing it
over left a window in which another xdist worker's server, given the same port the
same way, bound it first. Here:

- each pytest-xdist worker (``PYTEST_XDIST_WORKER`` = gw0, gw1, ...) draws from its
  own range, so two workers never hand out the same port; the ranges lie below
  Linux's ephemeral range (32768-60999), which bind-to-0 and outgoing connections use;
- a port is handed out once per process (a cursor moves through the range), and only
  when nothing is bound to it now (another test run on the machine, a system service);
- a service that still finds its port taken (by another pytest session on the same
  machine) is started again on the next one: ``on_free_port``.

Imported as ``loopback_ports`` (``tests/`` is on ``sys.path``, as for ``cli.installation``)
and by path from ``bench/``, so it imports nothing from the tests.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

FIRST_PORT = 20_000
PORTS_PER_WORKER = 1_500
# 20000-31999, below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range)
WORKER_RANGES = 8
# what a service prints when its port is taken (strerror of EADDRINUSE)
ADDRESS_IN_USE = "Address already in use"


class PortTaken(Exception):
    """The service could not bind its port: another program has it."""


_cursor: int | None = None  # offset in this process's range of the next port to try


def worker_range() -> range:
    """This process's ports: one range per xdist worker, one more outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(name[2:]) + 1 if name.startswith("gw") and name[2:].isdigit() else 0
    first = FIRST_PORT + (index % WORKER_RANGES) * PORTS_PER_WORKER
    return range(first, first + PORTS_PER_WORKER)


def free_port() -> int:
    """A loopback TCP port of this worker's range that nothing is bound to now and that
    this process has not handed out before (until it has gone through the range)."""
    global _cursor
    ports = worker_range()
    if _cursor is None:  # another pytest session on the machine uses the same ranges
        _cursor = random.randrange(len(ports))
    for _ in range(len(ports)):
        port = ports[_cursor % len(ports)]
        _cursor += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"no free loopback port in {ports.start}-{ports.stop - 1}")


def on_free_port(start: Callable[[int], T], first: int | None = None, attempts: int = 5) -> T:
    """``start(port)`` with ``first`` or a free port; again with the next free one each
    time it raises ``PortTaken`` (another program bound the port first), up to
    ``attempts`` times."""
    port = first if first is not None else free_port()
    for attempt in range(attempts):
        try:
            return start(port)
        except PortTaken:
            if attempt == attempts - 1:
                raise
            port = free_port()
    raise AssertionError("unreachable")


def set_listen_port(home: Path, port: int) -> None:
    """Make a Ferryman server home listen on ``port`` (its ``server.json``; ``server run``
    writes the new address into ``client.json``): for a server whose port was taken
    between ``server init`` and ``server run``."""
    config = home / "server.json"
    settings = json.loads(config.read_text())
    settings["listen"] = f"127.0.0.1:{port}"
    config.write_text(json.dumps(settings, indent=2) + "\n")


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself listens on loopback TCP ``port`` (``/proc``): a
    connection that succeeds may have reached another program that holds the port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # exited meanwhile
        return False


def _bindable(port: int) -> bool:
    with socket.socket() as probe:  # no SO_REUSEADDR: a port in TIME_WAIT is skipped too
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
