"""Network namespaces for the scale-out benchmark: one per proxy, each behind its own
bandwidth-capped link to a bridge in the host namespace.

    host namespace                      namespace fm-bench-pN
    fmbr0 10.77.0.1/24  ── fmb-pN ═══ fmb-pNn 10.77.0.(10+N)/24
      (server, S3)         tbf cap       tbf cap   (proxy N)

Both ends of every veth pair get a ``tbf`` qdisc at the same rate, so a proxy's
uploads (namespace → host) and downloads (host → namespace) are each capped.
The host end of the bridge carries no qdisc: traffic between the host's own
processes is not capped. Only ``ip`` and ``tc`` are used; nothing is routed
beyond the bridge (no forwarding, no NAT), so no traffic leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

BRIDGE = "fmbr0"
SUBNET = "10.77.0"
HOST_ADDRESS = f"{SUBNET}.1"
PREFIX = 24
NAMESPACE_PREFIX = "fm-bench-p"
VETH_PREFIX = "fmb-p"
MAX_PROXIES = 200  # addresses .11 … .210 on the /24


@dataclass(frozen=True)
class Link:
    """The plan for one proxy's namespace and link."""

    index: int
    namespace: str
    host_veth: str
    ns_veth: str
    address: str


def address_plan(count: int) -> list[Link]:
    """Namespaces, interface names (<= 15 characters) and addresses for ``count`` proxies."""
    if not 1 <= count <= MAX_PROXIES:
        raise ValueError(f"between 1 and {MAX_PROXIES} proxies, got {count}")
    links = []
    for i in range(1, count + 1):
        host_veth = f"{VETH_PREFIX}{i}"
        links.append(
            Link(
                index=i,
                namespace=f"{NAMESPACE_PREFIX}{i}",
                host_veth=host_veth,
                ns_veth=f"{host_veth}n",
                address=f"{SUBNET}.{10 + i}",
            )
        )
    return links


def tbf_args(rate_mbit: float) -> list[str]:
    """``tc qdisc … tbf`` parameters for a cap of ``rate_mbit`` megabits per second.

    The bucket holds 10 ms at the rate but at least 32 KiB (a few full-size
    packets; the kernel segments larger GSO packets), and a packet waits at
    most 100 ms in the queue before it is dropped (TCP then backs off)."""
    if rate_mbit <= 0:
        raise ValueError(f"the link cap must be positive, got {rate_mbit} Mbit/s")
    rate_bytes = rate_mbit * 1e6 / 8
    burst = max(32 * 1024, int(rate_bytes * 0.010))
    return ["tbf", "rate", f"{rate_mbit:g}mbit", "burst", str(burst), "latency", "100ms"]


def missing_requirements() -> str | None:
    """Why the namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs and tc qdiscs)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs the '{tool}' command (iproute2)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


class Namespaces:
    """Create the bridge, namespaces, links and caps; ``remove()`` undoes all of it."""

    def __init__(self, count: int, rate_mbit: float) -> None:
        self.links = address_plan(count)
        self.rate_mbit = rate_mbit

    def create(self) -> Namespaces:
        self.remove()  # leftovers of an interrupted run
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        cap = tbf_args(self.rate_mbit)
        for link in self.links:
            ns = link.namespace
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", link.host_veth, "type", "veth", "peer", "name", link.ns_veth)
            _run("ip", "link", "set", link.ns_veth, "netns", ns)
            _run("ip", "link", "set", link.host_veth, "master", BRIDGE)
            _run("ip", "link", "set", link.host_veth, "up")
            _run("ip", "-n", ns, "addr", "add", f"{link.address}/{PREFIX}", "dev", link.ns_veth)
            _run("ip", "-n", ns, "link", "set", link.ns_veth, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("tc", "qdisc", "add", "dev", link.host_veth, "root", *cap)
            _run("tc", "-n", ns, "qdisc", "add", "dev", link.ns_veth, "root", *cap)
        return self

    def remove(self) -> None:
        """Delete every namespace and interface this module names (also a previous run's)."""
        listed = _run("ip", "netns", "list", check=False).stdout.split()
        for name in listed:
            if name.startswith(NAMESPACE_PREFIX):
                _run("ip", "netns", "del", name, check=False)
        links = _run("ip", "-o", "link", "show", check=False).stdout.splitlines()
        for line in links:
            parts = line.split(":")
            if len(parts) < 2:
                continue
            name = parts[1].strip().split("@")[0]
            if name.startswith(VETH_PREFIX):
                _run("ip", "link", "del", name, check=False)
        if any(line.split(":")[1].strip() == BRIDGE for line in links if ":" in line):
            _run("ip", "link", "del", BRIDGE, check=False)

    def __enter__(self) -> Namespaces:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()
