"""End to end through the CLI on an installation with two extra proxies and no embedded one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .installation import Installation, new_installation
from .test_end_to_end import tree

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-e2e-proxies"))
    try:
        installation.start(embedded_proxy=False)
        installation.start_proxy("p1", site="hq")
        installation.start_proxy("p2", site="branch")
        installation.wait_online("p1", "p2")
        yield installation
    finally:
        installation.stop()


def make_share(root: Path, seed: int) -> Path:
    (root / "sub").mkdir(parents=True)
    for i in range(20):
        (root / "sub" / f"file{i}.bin").write_bytes(os.urandom(20_000 + seed * 1000 + i))
    (root / "top.txt").write_text(f"share {seed}\n")
    return root


def test_tasks_spread_over_proxies_and_points_restore(server: Installation, tmp_path: Path) -> None:
    sources = {name: make_share(tmp_path / name, seed) for seed, name in enumerate(["s1", "s2"])}
    for name, path in sources.items():
        server.ok("share", "add", name, str(path))
    server.ok("job", "add", "two", "--share", "s1", "--share", "s2", "--repo", "default")

    followed = server.ok("job", "run", "two", "--follow")
    assert "ended SUCCESS" in followed

    session = server.json("session", "list", "--job", "two", "--kind", "backup")[-1]
    placed = {task["share"]: task["proxy"] for task in session["tasks"]}
    assert set(placed) == {"s1", "s2"}
    assert set(placed.values()) == {"p1", "p2"}, session["tasks"]
    report = server.ok("session", "show", str(session["id"]))
    assert report.count("why this proxy:") == 2

    points = {p["share"]: p for p in server.json("point", "list", "--job", "two")}
    assert set(points) == {"s1", "s2"}
    for name, path in sources.items():
        target = server.work / f"restored-{name}"
        restored = server.ok("restore", str(points[name]["id"]), "--to", str(target), "--follow")
        assert "ended SUCCESS" in restored
        assert tree(target) == tree(path)


def test_proxy_inventory_shows_sites_and_disable(server: Installation) -> None:
    proxies = {p["name"]: p for p in server.json("proxy", "list")}
    assert proxies["p1"]["site"] == "hq" and proxies["p2"]["site"] == "branch"
    assert proxies["embedded"]["state"] in ("offline", "disabled")
    server.ok("proxy", "disable", "p2")
    try:
        states = {p["name"]: p["state"] for p in server.json("proxy", "list")}
        assert states["p2"] in ("disabled", "draining")
        followed = server.ok("job", "run", "two", "--follow")
        assert "ended SUCCESS" in followed
        last = server.json("session", "list", "--job", "two", "--kind", "backup")[-1]
        assert {t["proxy"] for t in last["tasks"]} == {"p1"}
    finally:
        server.ok("proxy", "enable", "p2")
