"""A large share split into partitions worked on by several proxies at once, then assembled
into one restore point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import ProxyProcess, ServerProcess, assert_same_tree, make_tree

SMALL_THRESHOLDS = {
    "FERRYMAN_PARTITION_MIN_FILES": "20",
    "FERRYMAN_PARTITION_MIN_BYTES": "1000000000",
}


def test_partitioned_share_spreads_and_assembles(
    tmp_path: Path,
    make_server: Callable[..., ServerProcess],
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    source = make_tree(tmp_path / "src", dirs=6, files=4)
    server = make_server(env=SMALL_THRESHOLDS)
    make_proxy(server, "p1", slots=2)
    server.wait_proxies({"embedded", "p1"})
    server.post("/shares", {"name": "big", "url": str(source), "io_control": "above-normal"})
    server.post("/jobs", {"name": "job", "shares": ["big"], "repository": "default"})
    server.wait_probes("p1", 2)
    server.wait_probes("embedded", 2)

    # the first run is already split: the share probe made a quick top-level scan
    first = server.wait_session(server.post("/jobs/job/run")["id"])
    assert first["status"] == "success", first
    assert len([t for t in first["tasks"] if t["kind"] == "backup"]) >= 2
    assert len(first["restore_points"]) == 1

    (source / "dir9").mkdir()  # appeared since the statistics were taken: lands in partition 0
    (source / "dir9" / "new.txt").write_text("new")
    second = server.wait_session(server.post("/jobs/job/run")["id"])
    assert second["status"] == "success", second
    backups = [t for t in second["tasks"] if t["kind"] == "backup"]
    assemble = [t for t in second["tasks"] if t["kind"] == "assemble"]
    assert len(backups) >= 2 and len(assemble) == 1
    assert {t["partition"]["count"] for t in backups} == {len(backups)}
    assert {t["proxy"] for t in backups} == {"embedded", "p1"}
    assert len(second["restore_points"]) == 1

    point = server.get(f"/points/{second['restore_points'][0]}")
    assert point["files"] == 6 * 4 * 2 + 2 + 1
    out = tmp_path / "out"
    restore = server.wait_session(
        server.post("/restores", {"point": point["id"], "to": str(out)})["id"]
    )
    assert restore["status"] == "success", restore
    # the whole-share restore is split the same way and spread too
    assert len(restore["tasks"]) == len(backups)
    assert {t["proxy"] for t in restore["tasks"]} == {"embedded", "p1"}
    assert assert_same_tree(source, out) == 6 * 4 * 2 + 2

    # the assembled run refreshed the statistics: the next run is planned from them
    third = server.wait_session(server.post("/jobs/job/run")["id"])
    assert third["status"] == "success", third
    parts = [t["partition"] for t in third["tasks"] if t["kind"] == "backup"]
    assert len(parts) >= 2
    assert "dir9" in {name for p in parts for name in p["paths"]}
    assert server.stop() == 0
