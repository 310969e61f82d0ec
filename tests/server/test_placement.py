"""The placement rules as pure functions: eligibility, proximity, load, spread, limits."""

from __future__ import annotations

from ferryman.server.placement import ProbeView, ProxyView, TaskNeeds, pick_proxy


def proxy(
    pid: int,
    name: str,
    site: str | None = None,
    slots: int = 2,
    busy: int = 0,
    share_ok: bool | None = True,
    online: bool = True,
    enabled: bool = True,
) -> ProxyView:
    probes = {("repository", 1): ProbeView(ok=True, age=1)}
    if share_ok is not None:
        probes[("share", 1)] = ProbeView(ok=share_ok, age=1, error=None if share_ok else "gone")
    return ProxyView(pid, name, site, slots, busy, online, enabled, probes=probes)


def needs(**kw: object) -> TaskNeeds:
    base: dict[str, object] = dict(
        kind="backup", share_id=1, share_name="s", repository_id=1, repository_name="r"
    )
    base.update(kw)
    return TaskNeeds(**base)  # type: ignore[arg-type]


def test_same_site_wins_over_lower_load() -> None:
    d = pick_proxy(
        [proxy(1, "far", "b", busy=0), proxy(2, "near", "a", busy=1)], needs(share_site="a")
    )
    assert d.proxy is not None and d.proxy.name == "near"
    assert "same site 'a'" in d.reason
    assert {"proxy": "far", "reason": "not at the share's site 'a'"} in d.passed_over


def test_lowest_load_then_spread() -> None:
    d = pick_proxy([proxy(1, "p1", slots=4, busy=2), proxy(2, "p2", slots=4, busy=1)], needs())
    assert d.proxy is not None and d.proxy.name == "p2"
    d = pick_proxy([proxy(1, "p1"), proxy(2, "p2")], needs(session_tasks={1: 1}))
    assert d.proxy is not None and d.proxy.name == "p2"


def test_unreachable_share_is_never_chosen() -> None:
    d = pick_proxy([proxy(1, "blind", share_ok=False), proxy(2, "ok", busy=1)], needs())
    assert d.proxy is not None and d.proxy.name == "ok"
    assert any(p["proxy"] == "blind" and "cannot reach share" in p["reason"] for p in d.passed_over)
    d = pick_proxy([proxy(1, "blind", share_ok=False)], needs())
    assert d.proxy is None and "no eligible proxy" in d.reason


def test_missing_probe_waits_and_asks() -> None:
    d = pick_proxy([proxy(1, "new", share_ok=None)], needs())
    assert d.proxy is None and d.wants_probes == [1]
    assert "probe" in d.reason


def test_offline_disabled_and_job_list() -> None:
    proxies = [proxy(1, "off", online=False), proxy(2, "dis", enabled=False), proxy(3, "other")]
    d = pick_proxy(proxies, needs(allowed_proxy_ids={1, 2}))
    assert d.proxy is None
    reasons = {p["proxy"]: p["reason"] for p in d.passed_over}
    assert reasons["off"].startswith("offline")
    assert reasons["dis"] == "disabled"
    assert reasons["other"] == "not in the job's proxy list"


def test_limits_slots_share_cap_and_repository() -> None:
    d = pick_proxy([proxy(1, "full", slots=1, busy=1)], needs())
    assert d.proxy is None and "busy" in d.reason
    assert d.passed_over == [{"proxy": "full", "reason": "all 1 task slots busy"}]
    # io-control "lower": one proxy at a time on the share; the one already on it may take more
    d = pick_proxy(
        [proxy(1, "a"), proxy(2, "b")],
        needs(share_proxies={1}, share_max_proxies=1, session_tasks={1: 1}),
    )
    assert d.proxy is not None and d.proxy.name == "a"
    assert any("allows 1 proxies" in p["reason"] for p in d.passed_over)
    d = pick_proxy([proxy(1, "a")], needs(repository_running=3, repository_max=3))
    assert d.proxy is None and "repository 'r' is at its limit of 3" in d.reason


def test_measured_round_trip_counts_as_distance_after_the_site() -> None:
    near, far = proxy(1, "near", busy=1), proxy(2, "far")
    near.probes[("share", 1)].rtt_ms = 0.3
    far.probes[("share", 1)].rtt_ms = 45.0
    d = pick_proxy([far, near], needs())
    assert d.proxy is not None and d.proxy.name == "near"
    assert {
        "proxy": "far",
        "reason": "farther from the share (round trip 45.0 ms)",
    } in d.passed_over
