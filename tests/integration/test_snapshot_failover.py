"""A proxy killed with SIGKILL while it backs up a btrfs share from a snapshot: the
snapshot it leaves is removed by the retry on the other proxy, and the session
still ends Success with a restore point equal to the share."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import ProxyProcess, ServerProcess, assert_same_tree, make_tree

BIG = 64 << 20


# the snapshot handling does not depend on the database: SQLite only (saves a 30 s run)
@pytest.mark.parametrize("db_url", [None])
def test_proxy_killed_mid_snapshot_backup_leftover_removed_by_the_retry(
    tmp_path: Path,
    db_url: str | None,
    btrfs_mount: Path,
    make_server: Callable[..., ServerProcess],
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    share = btrfs_mount / f"failover-{tmp_path.name}"
    subprocess.run(["btrfs", "subvolume", "create", str(share)], check=True, capture_output=True)
    make_tree(share, dirs=3, files=4)
    (share / "dir1" / "disk.img").write_bytes(random.Random(3).randbytes(BIG))
    snapdir = btrfs_mount / ".ferryman-snapshots"
    server = make_server(embedded=False)
    proxies = {name: make_proxy(server, name, slots=1) for name in ("a", "b")}
    server.wait_proxies({"a", "b"})
    server.post("/shares", {"name": "vol", "url": str(share), "snapshot": "btrfs"})
    server.post("/jobs", {"name": "job", "shares": ["vol"], "repository": "default"})
    for name in proxies:
        server.wait_probes(name, 2)
    brakes = [p.throttle() for p in proxies.values()]
    session_id = server.post("/jobs/job/run")["id"]

    # strike once the task reads from its snapshot
    victim, leftover = None, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim is None:
        view = server.get(f"/sessions/{session_id}")
        task = view["tasks"][0]
        made = (
            [n for n in os.listdir(snapdir) if not n.endswith(".lock")] if snapdir.exists() else []
        )
        if task["state"] == "running" and made and task["progress"].get("bytes_read", 0) > 0:
            victim, leftover = task["proxy"], snapdir / made[0]
        time.sleep(0.05)
    assert victim is not None and leftover is not None, "the task never read its snapshot"
    proxies[victim].kill()
    for brake in brakes:
        brake.set()
    assert leftover.is_dir()  # the dead proxy could not remove it

    session = server.wait_session(session_id)
    assert session["status"] == "success", session
    (final,) = session["tasks"]
    assert final["attempts"] == 2 and final["proxy"] != victim
    snap = final["stats"]["snapshot"]
    assert snap["leftovers_removed"] == [str(leftover)]
    assert snap["removed"] is True  # the retry (same task id) made its own, then removed it
    assert {"path": str(leftover), "reason": "leftover snapshot of an interrupted run removed"} in (
        final["warnings"]
    )
    assert [n for n in os.listdir(snapdir) if n.startswith("ferryman-")] == []

    out = tmp_path / "out"
    point = server.get("/points")[-1]
    restored = server.wait_session(
        server.post("/restores", {"point": point["id"], "to": str(out)})["id"]
    )
    assert restored["status"] == "success", restored
    assert assert_same_tree(share, out) > 0
    assert server.stop() == 0
