"""Three real proxy processes with different sites and slots: where tasks land, and why."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import ProxyProcess, ServerProcess, make_tree


def _shares(
    server: ServerProcess, root: Path, prefix: str, count: int, site: str | None, big: int = 0
) -> list[str]:
    names = []
    for i in range(count):
        name = f"{prefix}{i}"
        make_tree(root / name, dirs=2, files=3, seed=i, big=big)
        server.post("/shares", {"name": name, "url": str(root / name), "site": site})
        names.append(name)
    return names


def test_sites_slots_reachability_load_and_waiting(
    tmp_path: Path,
    make_server: Callable[..., ServerProcess],
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:  # hiding a folder from one proxy needs a private mount namespace
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.decode().strip()}")
    server = make_server(embedded=False)
    hidden = tmp_path / "hq-shares"
    hidden.mkdir()
    hq = _shares(server, hidden, "hq", 3, site="hq")
    anywhere = _shares(server, tmp_path / "open", "any", 4, site=None)
    slow = _shares(server, tmp_path / "slow", "slow", 2, site=None, big=24 << 20)
    hq1 = make_proxy(server, "hq1", site="hq", slots=1)
    make_proxy(server, "branch", site="branch", slots=2)
    make_proxy(server, "blind", site="hq", slots=3, hide=hidden)
    proxies = server.wait_proxies({"hq1", "branch", "blind"})
    slots = {p["name"]: p["slots"] for p in proxies if not p["embedded"]}
    assert slots == {"hq1": 1, "branch": 2, "blind": 3}
    for name in ("hq1", "branch", "blind"):
        server.wait_probes(name, len(hq) + len(anywhere) + len(slow) + 1)
    blind = server.get("/proxies/blind")
    assert all(not p["ok"] for p in blind["probes"] if p["target"].startswith("hq"))

    # 1. proximity first, then whoever reaches the share and has a free slot
    server.post("/jobs", {"name": "hq-job", "shares": hq, "repository": "default"})
    session = server.wait_session(server.post("/jobs/hq-job/run")["id"])
    assert session["status"] == "success", session
    tasks = session["tasks"]
    assert "blind" not in {t["proxy"] for t in tasks}
    assert sorted(t["proxy"] for t in tasks) == ["branch", "branch", "hq1"]
    near = next(t for t in tasks if t["proxy"] == "hq1")
    assert "same site 'hq'" in near["reason"]
    passed = {p["proxy"]: p["reason"] for p in near["passed_over"]}
    assert passed["blind"].startswith("cannot reach share")
    assert passed["branch"] == "not at the share's site 'hq'"
    far = [t for t in tasks if t["proxy"] == "branch"]
    assert all("no eligible proxy at the share's site 'hq'" in t["reason"] for t in far)
    assert all({"proxy": "hq1", "reason": "all 1 task slots busy"} in t["passed_over"] for t in far)

    # 2. load balancing: four tasks over three idle proxies, lowest load first
    server.post("/jobs", {"name": "spread", "shares": anywhere, "repository": "default"})
    session = server.wait_session(server.post("/jobs/spread/run")["id"])
    assert session["status"] == "success", session
    used = [t["proxy"] for t in session["tasks"]]
    assert set(used) == {"hq1", "branch", "blind"}, used
    assert all("load 0/" in t["reason"] or "load 1/3" in t["reason"] for t in session["tasks"])

    # 3. waiting for resources, then placed the moment the slot frees
    server.post(
        "/jobs", {"name": "queue", "shares": slow, "repository": "default", "proxies": ["hq1"]}
    )
    brake = hq1.throttle()  # keep the first task busy long enough to watch the second wait
    session_id = server.post("/jobs/queue/run")["id"]
    seen_waiting = False
    revision = -1
    while True:
        view = server.get(f"/sessions/{session_id}/follow?revision={revision}&timeout=5")
        revision = view["revision"]
        second = view["tasks"][1]
        if second["state"] == "waiting" and "waiting for resources" in (second["reason"] or ""):
            seen_waiting = True
            assert {"proxy": "hq1", "reason": "all 1 task slots busy"} in second["passed_over"]
            brake.set()
        if view["status"] != "running":
            break
    brake.set()
    assert view["status"] == "success", view
    first, second = view["tasks"]
    assert first["proxy"] == second["proxy"] == "hq1"
    assert second["started"] >= first["ended"]
    assert seen_waiting
    assert server.stop() == 0
