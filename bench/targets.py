"""The performance targets of QUALITY.md and Ferryman's ratios to each peer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.measure import StepResult

FIRST = "first backup"
UNCHANGED = "unchanged re-run"
DAILY = "after daily change"
RESTORE = "full restore"
STEPS = (FIRST, UNCHANGED, DAILY, RESTORE)

PROXY_MEMORY_LIMIT = 300 * 1000 * 1000


@dataclass(frozen=True)
class Target:
    """A ratio of Ferryman to restic, and the bound QUALITY.md sets on it."""

    measure: str
    step: str
    ratio: Callable[[StepResult, StepResult], float]  # (ferryman, peer) -> ratio
    meaning: str  # how to read the ratio
    bound: float
    at_least: bool  # True: ratio >= bound passes; False: ratio <= bound passes

    def describe(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.bound:g}x"

    def passes(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound


def _throughput(ferry: StepResult, peer: StepResult) -> float:
    return peer.seconds / ferry.seconds  # same source bytes: inverse of the times


def _time(ferry: StepResult, peer: StepResult) -> float:
    return ferry.seconds / peer.seconds


def _size(ferry: StepResult, peer: StepResult) -> float:
    return ferry.repository_bytes / peer.repository_bytes


TARGETS = (
    Target("first backup throughput", FIRST, _throughput, "x the peer's MB/s", 3.0, True),
    Target("unchanged re-run time", UNCHANGED, _time, "x the peer's seconds", 0.25, False),
    Target("daily-change run time", DAILY, _time, "x the peer's seconds", 0.33, False),
    Target("full restore throughput", RESTORE, _throughput, "x the peer's MB/s", 3.0, True),
    Target("repository size (3 backups)", DAILY, _size, "x the peer's bytes", 1.0, False),
)


@dataclass
class Comparison:
    """One target, Ferryman against one peer."""

    measure: str
    peer: str
    ratio: float | None
    meaning: str
    target: str | None  # None: QUALITY.md sets no bound against this peer
    passed: bool | None

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def compare(results: list[StepResult], peers: list[str]) -> list[Comparison]:
    """Ferryman's ratio to each peer for every target (bounds apply to restic)."""
    by_key = {(r.tool, r.step): r for r in results}
    out: list[Comparison] = []
    for target in TARGETS:
        ferry = by_key.get(("ferryman", target.step))
        for peer_name in peers:
            peer = by_key.get((peer_name, target.step))
            bound = target.describe() if peer_name == "restic" else None
            ratio: float | None = None
            if ferry and peer and ferry.ok and peer.ok:
                try:
                    ratio = target.ratio(ferry, peer)
                except ZeroDivisionError:
                    ratio = None
            passed = target.passes(ratio) if bound and ratio is not None else None
            out.append(Comparison(target.measure, peer_name, ratio, target.meaning, bound, passed))
    return out


def _server_rss(result: StepResult) -> int:
    """Memory of the server and everything it started (its embedded proxy's worker
    processes), and of a standalone proxy and its workers if one runs, at the step's peak,
    without the CLI; the whole tree if no server is named."""
    if not any("server run" in cmd for _, cmd, _ in result.peak_breakdown):
        return result.peak_rss_bytes
    client = [
        rss
        for _, cmd, rss in result.peak_breakdown
        if cmd.startswith("ferryman ") and "server run" not in cmd and "proxy run" not in cmd
    ]
    return result.peak_rss_bytes - sum(client)


def ferryman_memory_check(results: list[StepResult]) -> Comparison | None:
    """Peak memory (PSS) of the processes holding the proxy over all steps, against the
    proxy limit.

    Through the CLI that is ``ferryman server run`` with its embedded proxy and the
    worker processes it started (the CLI client is left out), an upper bound of the
    proxy's own peak; engine-direct it is the engine process and its workers.
    """
    backups = [r for r in results if r.tool == "ferryman" and r.ok]  # restores are tasks too
    if not backups:
        return None
    commands = [cmd for r in backups for _, cmd, _ in r.peak_breakdown]
    through_server = any("server run" in cmd for cmd in commands)
    standalone = any("proxy run" in cmd for cmd in commands)
    peak = max(_server_rss(r) for r in backups)
    holder = "server + standalone proxy" if standalone else "server + embedded proxy"
    return Comparison(
        "peak memory, " + (holder if through_server else "engine process") + " (MB)",
        "-",
        peak / 1e6,
        "MB, highest of the 4 steps",
        f"≤ {PROXY_MEMORY_LIMIT / 1e6:.0f} MB",
        peak <= PROXY_MEMORY_LIMIT,
    )
