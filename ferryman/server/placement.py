"""Pick the proxy for one task: eligibility, then proximity, load and spread, within limits.

Pure functions over plain views so the rules can be tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IO_CONTROL_MAX_PROXIES: dict[str, int | None] = {
    "lower": 1,
    "below-normal": 1,
    "normal": 2,
    "adaptive": 2,  # as normal; each task also follows the source's read latency
    "above-normal": 4,
    "faster": None,
}


@dataclass
class ProbeView:
    ok: bool
    age: float
    error: str | None = None
    rtt_ms: float | None = None


def rtt_class(rtt_ms: float | None) -> int:
    """Coarse distance from a round-trip time: same host/LAN, near, far, very far."""
    if rtt_ms is None or rtt_ms < 5:
        return 0
    if rtt_ms < 20:
        return 1
    if rtt_ms < 200:
        return 2
    return 3


@dataclass
class ProxyView:
    id: int
    name: str
    site: str | None
    slots: int
    busy: int
    online: bool
    enabled: bool
    offline_for: float = 0.0
    probes: dict[tuple[str, int], ProbeView] = field(default_factory=dict)
    capabilities: dict[str, object] = field(default_factory=dict)

    @property
    def load(self) -> float:
        return self.busy / self.slots if self.slots else 1.0


@dataclass
class TaskNeeds:
    kind: str
    share_id: int | None = None
    share_name: str | None = None
    share_site: str | None = None
    repository_id: int | None = None
    repository_name: str | None = None
    allowed_proxy_ids: set[int] | None = None  # None = automatic
    # proxies already working on this share now, and the share's io-control cap
    share_proxies: set[int] = field(default_factory=set)
    share_max_proxies: int | None = None
    # tasks of the same session per proxy, to spread a job
    session_tasks: dict[int, int] = field(default_factory=dict)
    repository_running: int = 0
    repository_max: int | None = None
    needs_share_probe: bool = True
    needs_repository_probe: bool = True
    source_type: str = "local"
    # a backup of a share read through a snapshot provider: the proxy must be able to make it
    snapshot_provider: str | None = None


@dataclass
class Decision:
    proxy: ProxyView | None
    reason: str
    passed_over: list[dict[str, str]]
    # proxies that lack a connectivity probe for what the task needs
    wants_probes: list[int] = field(default_factory=list)


def _ineligible(proxy: ProxyView, needs: TaskNeeds, wants: list[int]) -> str | None:
    if not proxy.enabled:
        return "disabled"
    if not proxy.online:
        return f"offline (no heartbeat for {proxy.offline_for:.0f}s)"
    if needs.allowed_proxy_ids is not None and proxy.id not in needs.allowed_proxy_ids:
        return "not in the job's proxy list"
    sources = proxy.capabilities.get("sources")
    if needs.needs_share_probe and isinstance(sources, list) and needs.source_type not in sources:
        return f"cannot handle {needs.source_type} sources"
    snapshots = proxy.capabilities.get("snapshots")
    wanted = needs.snapshot_provider
    if wanted and isinstance(snapshots, list) and wanted not in snapshots:
        return f"cannot make {wanted} snapshots (tool missing)"
    checks = []
    if needs.needs_share_probe and needs.share_id is not None:
        checks.append(("share", needs.share_id, needs.share_name))
    if needs.needs_repository_probe and needs.repository_id is not None:
        checks.append(("repository", needs.repository_id, needs.repository_name))
    for kind, target_id, target_name in checks:
        probe = proxy.probes.get((kind, target_id))
        if probe is None:
            wants.append(proxy.id)
            return f"connectivity to {kind} '{target_name}' not probed yet"
        if not probe.ok:
            return f"cannot reach {kind} '{target_name}': {probe.error or 'unreachable'}"
    return None


def _limited(proxy: ProxyView, needs: TaskNeeds) -> str | None:
    if proxy.busy >= proxy.slots:
        return f"all {proxy.slots} task slots busy"
    cap = needs.share_max_proxies
    if cap is not None and proxy.id not in needs.share_proxies and len(needs.share_proxies) >= cap:
        return f"share '{needs.share_name}' I/O control allows {cap} proxies at once"
    return None


def _share_rtt(proxy: ProxyView, needs: TaskNeeds) -> float | None:
    if needs.share_id is None:
        return None
    probe = proxy.probes.get(("share", needs.share_id))
    return probe.rtt_ms if probe is not None else None


def preference_key(proxy: ProxyView, needs: TaskNeeds) -> tuple[int, int, float, int, str]:
    close = 0 if needs.share_site is not None and proxy.site == needs.share_site else 1
    distance = rtt_class(_share_rtt(proxy, needs))
    spread = needs.session_tasks.get(proxy.id, 0)
    return (close, distance, round(proxy.load, 6), spread, proxy.name)


def _why(proxy: ProxyView, needs: TaskNeeds, others: int) -> str:
    parts = []
    if needs.share_site is not None and proxy.site == needs.share_site:
        parts.append(f"same site '{proxy.site}' as the share")
    elif needs.share_site is not None:
        parts.append(f"no eligible proxy at the share's site '{needs.share_site}'")
    parts.append(f"load {proxy.busy}/{proxy.slots}")
    spread = needs.session_tasks.get(proxy.id, 0)
    if spread:
        parts.append(f"{spread} task(s) of this session already there")
    if others:
        parts.append(f"best of {others + 1} candidates")
    return "; ".join(parts)


def pick_proxy(proxies: list[ProxyView], needs: TaskNeeds) -> Decision:
    """Choose a proxy for a task, or explain why the task must wait."""
    passed: list[dict[str, str]] = []
    wants: list[int] = []
    if (
        needs.repository_max is not None
        and needs.repository_id is not None
        and needs.repository_running >= needs.repository_max
    ):
        return Decision(
            None,
            f"waiting for resources: repository '{needs.repository_name}' is at its limit "
            f"of {needs.repository_max} concurrent tasks",
            passed,
        )
    eligible: list[ProxyView] = []
    for proxy in proxies:
        why_not = _ineligible(proxy, needs, wants)
        if why_not:
            passed.append({"proxy": proxy.name, "reason": why_not})
        else:
            eligible.append(proxy)
    if not eligible:
        if wants:
            reason = "waiting for connectivity probes"
        elif proxies:
            reason = "waiting: no eligible proxy"
        else:
            reason = "waiting: no proxy registered"
        return Decision(None, reason, passed, wants)
    free: list[ProxyView] = []
    for proxy in sorted(eligible, key=lambda p: preference_key(p, needs)):
        limit = _limited(proxy, needs)
        if limit:
            passed.append({"proxy": proxy.name, "reason": limit})
        else:
            free.append(proxy)
    if not free:
        return Decision(
            None, "waiting for resources: every eligible proxy is busy or limited", passed, wants
        )
    chosen = free[0]
    for other in free[1:]:
        passed.append({"proxy": other.name, "reason": _passed_reason(other, chosen, needs)})
    return Decision(chosen, _why(chosen, needs, len(free) - 1), passed, wants)


def _passed_reason(other: ProxyView, chosen: ProxyView, needs: TaskNeeds) -> str:
    a, b = preference_key(chosen, needs), preference_key(other, needs)
    if a[0] < b[0]:
        return f"not at the share's site '{needs.share_site}'"
    if a[1] < b[1]:
        return f"farther from the share (round trip {_share_rtt(other, needs)} ms)"
    if a[2] < b[2]:
        return f"busier (load {other.busy}/{other.slots})"
    if a[3] < b[3]:
        return "already runs more tasks of this session"
    return "equal candidate; name order"
