"""Host analysis: what the host is and has, and whether that meets a proxy's requirements.

Two probes run on the host: a POSIX shell one that finds a Python 3, then a Python one
(sent on stdin, nothing installed) that reports the facts below. `evaluate` turns the
facts into a report of hard requirements (never overridable), soft ones (`--force`
overrides them) and notes.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ferryman.proxy.capacity import MEMORY_PER_SLOT, RESERVED_MEMORY
from ferryman.server.deploy.connection import HostConnection

MIN_PYTHON = (3, 11)
SUPPORTED_ARCHES = ("x86_64", "aarch64")
MIN_DISK_HARD = 400 * 1024**2  # the unpacked environment is ~150 MB, plus the upload
MIN_DISK_SOFT = 1024**3  # room for the proxy's local metadata cache
MIN_MEMORY_SOFT = MEMORY_PER_SLOT + RESERVED_MEMORY
MAX_SKEW_SOFT = 5.0
MAX_SKEW_HARD = 240.0  # certificates are issued valid from 5 minutes before "now"

# Pythons that really run (a pyenv shim may not): "major.minor path". A system-wide one
# (a service account can run it) is searched first, newest first, and ends the search;
# otherwise every python3* on the PATH is listed and the newest taken.
FIND_PYTHON = """
for v in 3.14 3.13 3.12 3.11; do
  for d in /usr/bin /usr/local/bin; do
    if [ -x "$d/python$v" ] && "$d/python$v" -c '' 2>/dev/null; then
      echo "$v $d/python$v"; exit 0
    fi
  done
done
for p in python3.14 python3.13 python3.12 python3.11 python3; do
  command -v "$p" >/dev/null 2>&1 || continue
  "$p" -c 'import sys; v = sys.version_info; print("%d.%d %s" % (v[0], v[1], sys.executable))' \\
    2>/dev/null
done
exit 0
"""

# Runs on the host with whatever Python 3 it has: keep it compatible with old versions.
FACTS_SCRIPT = r"""
import json, os, platform, socket, sys, time
args = json.loads(sys.argv[1])
facts = {"os": platform.system(), "arch": platform.machine(), "kernel": platform.release()}
facts["python"] = ".".join(str(x) for x in sys.version_info[:3])
facts["python_path"] = sys.executable
try:
    facts["glibc"] = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
except (ValueError, OSError, AttributeError, IndexError):
    facts["glibc"] = None
try:
    import venv  # noqa
    facts["venv"] = True
except ImportError:
    facts["venv"] = False
distro = None
try:
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
facts["distro"] = distro
facts["hostname"] = socket.gethostname()
try:
    facts["cores"] = len(os.sched_getaffinity(0))
except AttributeError:
    facts["cores"] = os.cpu_count()
mem = {}
try:
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
except (OSError, ValueError):
    pass
facts["memory_total"] = mem.get("MemTotal")
facts["memory_available"] = mem.get("MemAvailable")
path = args["install_dir"]
denied = None
while True:
    try:
        os.stat(path)
        break
    except FileNotFoundError:
        path = os.path.dirname(path) or "/"
    except OSError as exc:
        denied = str(exc)
        break
try:
    st = os.statvfs(path)
    facts["disk_free"] = st.f_bavail * st.f_frsize
except OSError:
    facts["disk_free"] = None
facts["disk_path"] = path
if denied is None and not os.access(path, os.W_OK | os.X_OK):
    denied = "%s is not writable" % path
facts["install_denied"] = denied
facts["systemd"] = os.path.isdir("/run/systemd/system")
facts["uid"] = os.geteuid()
facts["installed_version"] = None
try:
    with open(os.path.join(args["install_dir"], "version")) as f:
        facts["installed_version"] = f.read().strip() or None
except OSError:
    pass
started = time.time()
try:
    socket.create_connection((args["server_host"], args["server_port"]), 5).close()
    facts["reach"] = None
except OSError as exc:
    facts["reach"] = str(exc) or type(exc).__name__
facts["reach_ms"] = round((time.time() - started) * 1000, 1)
facts["time"] = time.time()
print(json.dumps(facts))
"""


@dataclass
class HostFacts:
    os: str | None = None
    arch: str | None = None
    distro: str | None = None
    kernel: str | None = None
    hostname: str | None = None
    python: str | None = None
    python_path: str | None = None
    glibc: str | None = None
    venv: bool = False
    cores: int | None = None
    memory_total: int | None = None
    memory_available: int | None = None
    disk_free: int | None = None
    disk_path: str | None = None
    systemd: bool = False
    uid: int | None = None
    installed_version: str | None = None
    install_denied: str | None = None  # why the install folder cannot be made, if it cannot
    reach: str | None = None  # None = reached; else the error
    reach_ms: float | None = None
    clock_skew: float | None = None  # host clock minus server clock, seconds
    server_address: str = ""

    @property
    def python_tuple(self) -> tuple[int, ...]:
        return tuple(int(x) for x in (self.python or "0").split(".")[:2])


@dataclass
class Check:
    name: str
    value: str
    level: str  # ok | soft | hard | note
    message: str = ""


@dataclass
class HostReport:
    facts: HostFacts
    checks: list[Check] = field(default_factory=list)
    suggested_slots: int = 1

    @property
    def hard_failures(self) -> list[Check]:
        return [c for c in self.checks if c.level == "hard"]

    @property
    def soft_failures(self) -> list[Check]:
        return [c for c in self.checks if c.level == "soft"]

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": asdict(self.facts),
            "checks": [asdict(c) for c in self.checks],
            "suggested_slots": self.suggested_slots,
        }


async def analyse(
    host: HostConnection, install_dir: str, server_host: str, server_port: int
) -> HostFacts:
    """Run the two probes on the host; a host without Python 3 still gets a report."""
    found = await host.run(FIND_PYTHON, check=False, what="looking for Python")
    python = _best_python(found.stdout)
    if not python:
        uname = await host.run("uname -s; uname -m", check=False, what="uname")
        words = uname.stdout.split()
        return HostFacts(
            os=words[0] if words else None,
            arch=words[1] if len(words) > 1 else None,
            server_address=f"{server_host}:{server_port}",
        )
    args = json.dumps(
        {"install_dir": install_dir, "server_host": server_host, "server_port": server_port}
    )
    before = time.time()
    result = await host.run(
        f"{shlex.quote(python)} - {shlex.quote(args)}", input=FACTS_SCRIPT, what="host analysis"
    )
    after = time.time()
    raw = json.loads(result.stdout.strip().splitlines()[-1])
    host_time = float(raw.pop("time"))
    known = set(HostFacts.__dataclass_fields__)
    facts = HostFacts(**{k: v for k, v in raw.items() if k in known})
    # the host read its clock near the end of the probe; compare with our clock then
    facts.clock_skew = round(host_time - after + min(0.05, (after - before) / 2), 3)
    facts.server_address = f"{server_host}:{server_port}"
    return facts


SYSTEM_DIRS = ("/usr/bin/", "/usr/local/bin/", "/bin/")


def _best_python(listing: str) -> str:
    """From FIND_PYTHON's lines ("3.11 /usr/bin/python3.11"): a usable version first, then
    a system-wide one (a service account can run it), then the newest."""
    best: tuple[tuple[bool, bool, int, int], str] | None = None
    for line in listing.splitlines():
        version, _, path = line.strip().partition(" ")
        try:
            major, minor = (int(x) for x in version.split("."))
        except ValueError:
            continue
        key = ((major, minor) >= MIN_PYTHON, path.startswith(SYSTEM_DIRS), major, minor)
        if path and (best is None or key > best[0]):
            best = (key, path)
    return best[1] if best else ""


def suggested_slots(facts: HostFacts) -> int:
    """Same rule as a proxy's own default: one per core, bounded by memory."""
    slots = max(1, facts.cores or 1)
    if facts.memory_available:
        slots = min(slots, max(1, (facts.memory_available - RESERVED_MEMORY) // MEMORY_PER_SLOT))
    return int(slots)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def evaluate(facts: HostFacts) -> HostReport:
    """Judge the facts against the requirements; pure, so the rules are unit-tested."""
    checks: list[Check] = []

    def add(name: str, value: str, level: str, message: str = "") -> None:
        checks.append(Check(name, value, level, message))

    system = " ".join(x for x in (facts.os, facts.distro and f"({facts.distro})") if x)
    add(
        "os",
        system or "unknown",
        "ok" if facts.os == "Linux" else "hard",
        "" if facts.os == "Linux" else "proxies run on Linux only",
    )
    add(
        "architecture",
        facts.arch or "unknown",
        "ok" if facts.arch in SUPPORTED_ARCHES else "hard",
        "" if facts.arch in SUPPORTED_ARCHES else f"supported: {', '.join(SUPPORTED_ARCHES)}",
    )
    if facts.python is None:
        add(
            "python",
            "not found",
            "hard",
            "install Python >= 3.11 with its venv module (Debian: apt-get install python3-venv)",
        )
    elif facts.python_tuple < MIN_PYTHON:
        add("python", f"{facts.python} ({facts.python_path})", "hard", "Python >= 3.11 is needed")
    elif not facts.venv:
        add(
            "python",
            f"{facts.python} ({facts.python_path})",
            "hard",
            "the venv module is missing (Debian: apt-get install python3-venv)",
        )
    else:
        add("python", f"{facts.python} ({facts.python_path})", "ok")
    if facts.python is not None:
        add("cpu cores", str(facts.cores or "unknown"), "ok")
        memory_level = "ok"
        if facts.memory_total is not None and facts.memory_total < MIN_MEMORY_SOFT:
            memory_level = "soft"
        add(
            "memory",
            f"{_size(facts.memory_total)} total, {_size(facts.memory_available)} available",
            memory_level,
            f"at least {_size(MIN_MEMORY_SOFT)} recommended" if memory_level != "ok" else "",
        )
        if facts.install_denied:
            add("install folder", facts.disk_path or "?", "hard", facts.install_denied)
        else:
            disk = facts.disk_free
            disk_level = "ok"
            if disk is None or disk < MIN_DISK_HARD:
                disk_level = "hard"
            elif disk < MIN_DISK_SOFT:
                disk_level = "soft"
            add(
                "free disk",
                f"{_size(disk)} at {facts.disk_path}",
                disk_level,
                ""
                if disk_level == "ok"
                else f"needs {_size(MIN_DISK_HARD)}, {_size(MIN_DISK_SOFT)} recommended",
            )
        add(
            "systemd",
            "yes" if facts.systemd else "no",
            "note" if not facts.systemd else "ok",
            "" if facts.systemd else "runs as a supervised background process (not at boot)",
        )
        skew = facts.clock_skew
        if skew is not None:
            level = "ok"
            if abs(skew) > MAX_SKEW_HARD:
                level = "hard"
            elif abs(skew) > MAX_SKEW_SOFT:
                level = "soft"
            add(
                "clock skew",
                f"{skew:+.1f}s",
                level,
                "" if level == "ok" else "synchronise the host clock (NTP)",
            )
        if facts.reach is None:
            add("reaches server", f"{facts.server_address} ({facts.reach_ms} ms)", "ok")
        else:
            add(
                "reaches server",
                facts.server_address,
                "hard",
                f"the host cannot open a TCP connection to it: {facts.reach}",
            )
    return HostReport(facts, checks, suggested_slots(facts))


def report_lines(report: HostReport) -> list[str]:
    marks = {"ok": "ok  ", "note": "note", "soft": "WARN", "hard": "FAIL"}
    lines = []
    for check in report.checks:
        line = f"  {marks[check.level]} {check.name:<15} {check.value}"
        if check.message:
            line += f" — {check.message}"
        lines.append(line)
    lines.append(f"  suggested task slots: {report.suggested_slots}")
    return lines
