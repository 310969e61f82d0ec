"""Peak resident memory of whole process trees, sampled from /proc.

A backup tool is usually several processes (a CLI plus a server and its proxy,
or a program that forks helpers), so the figure that matters is the memory of
every process in the tree at one instant, summed, and its peak over the run.
Each process counts its **proportional set size** (PSS, ``/proc/<pid>/smaps_rollup``):
its private pages plus its share of pages it shares with others. Summing RSS
instead counts shared pages once per process: a process that forks (even for the
instant before an ``exec``) would double the parent's whole heap in the sum.
Where PSS cannot be read, RSS is used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _parent_map() -> dict[int, int]:
    """pid → parent pid for every process visible in /proc."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited between listdir and open
        # the command name is in parentheses and may itself contain spaces or ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(name)] = int(fields[1])
    return parents


def descendants(roots: Iterable[int], parents: dict[int, int] | None = None) -> set[int]:
    """The given processes and all their descendants that are still alive."""
    parents = _parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [pid for pid in roots if pid in parents]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def rss_bytes(pid: int) -> int:
    """Memory of one process: its proportional set size (its resident set size where
    that cannot be read); 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds one process has used so far; 0.0 if it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def command_line(pid: int, limit: int = 80) -> str:
    """A short command line: program names without folders, no ``--home``; "" if gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    args = [os.fsdecode(a) for a in raw]
    if len(args) > 1 and os.path.basename(args[0]).startswith("python") and "/" in args[1]:
        args = args[1:]  # "python3 /venv/bin/ferryman …": the script is the program
    shown: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--home":
            skip = True
        else:
            shown.append(os.path.basename(arg) if i == 0 else arg)
    return " ".join(shown)[:limit]


def tree_rss_bytes(roots: Iterable[int]) -> int:
    """Summed RSS of the given processes and their descendants, right now."""
    return sum(rss_bytes(pid) for pid in descendants(roots))


def harness_processes(exclude: Iterable[int] = ()) -> set[int]:
    """Every process this harness started, and theirs, less the trees of ``exclude``.

    ``exclude`` names long-lived processes of *other* tools (a server kept
    running between steps), whose memory and time must not count for this one.
    """
    parents = _parent_map()
    me = os.getpid()
    return descendants([me], parents) - {me} - descendants(exclude, parents)


class TreeMemorySampler:
    """Samples the summed RSS of a set of processes in a background thread.

    ``processes`` is called at every sample (new processes are picked up as they
    start); :func:`harness_processes` and ``lambda: descendants([pid])`` are the
    usual choices. With ``cpu``, each process's CPU seconds are sampled too
    (``cpu_by_pid``: the last value seen, so a process that is not anyone's child to
    wait for, such as a fork server's worker, still counts, less its last interval).
    """

    def __init__(
        self, processes: Callable[[], Iterable[int]], interval: float = 0.05, cpu: bool = False
    ) -> None:
        self._processes = processes
        self._cpu = cpu
        self.cpu_by_pid: dict[int, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self.peak_breakdown: list[tuple[int, str, int]] = []  # (pid, command, rss) at the peak

    def sample(self) -> None:
        sizes = {pid: rss_bytes(pid) for pid in set(self._processes())}
        if self._cpu:
            for pid in sizes:
                self.cpu_by_pid[pid] = max(self.cpu_by_pid.get(pid, 0.0), cpu_seconds(pid))
        total = sum(sizes.values())
        self.samples += 1
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_breakdown = sorted(
                ((pid, command_line(pid), rss) for pid, rss in sizes.items()),
                key=lambda item: -item[2],
            )
        self.peak_processes = max(self.peak_processes, len(sizes))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
