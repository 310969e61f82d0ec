"""Schedules and retention end to end, through the CLI only (as a user types it)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .installation import FERRYMAN, Installation, new_installation
from .test_end_to_end import one_error_line, tree

pytestmark = pytest.mark.timeout(300)

BIG = 1_500_000  # bytes of fresh random data per run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-schedules"))
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


def stored_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_keep_last_removes_the_oldest_points_and_the_repository_shrinks(
    server: Installation, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    (share / "docs").mkdir(parents=True)
    (share / "docs" / "stable.txt").write_text("unchanged between runs\n" * 500)
    server.ok("share", "add", "ret", str(share))
    server.ok("job", "add", "ret-job", "--share", "ret", "--repo", "default", "--keep-last", "2")
    repo_dir = Path(server.json("repo", "list")[0]["url"])
    job = {j["name"]: j for j in server.json("job", "list")}["ret-job"]
    assert job["next_run"] is None and job["last_run"] is None  # no schedule: manual only

    trees = []
    sizes = []
    for run in range(4):
        if run < 3:
            (share / "big.bin").write_bytes(os.urandom(BIG))  # new data every run
        else:
            (share / "big.bin").unlink()  # the last run adds almost nothing
            (share / "docs" / "new.txt").write_text("run 4\n")
        trees.append(tree(share))
        followed = server.ok("job", "run", "ret-job", "--follow")
        assert "ended SUCCESS" in followed, followed
        sizes.append(stored_bytes(repo_dir))
        points = server.json("point", "list", "--job", "ret-job")
        assert len(points) == min(run + 1, 2), points

    print("repository bytes after each run:", sizes)
    # each retention freed the data only the removed point had: the repository shrank
    assert sizes[2] < sizes[1] + BIG // 2, sizes  # run 3 added BIG, retention freed BIG
    assert sizes[3] < sizes[2] - BIG // 2, sizes  # run 4 added ~0, retention freed BIG
    assert sizes[3] < 2 * BIG, sizes

    sessions = server.json("session", "list", "--job", "ret-job", "--kind", "backup")
    last = sessions[-1]
    maintenance = [t for t in last["tasks"] if t["kind"] == "maintenance"]
    assert len(maintenance) == 1 and maintenance[0]["state"] == "success"
    assert maintenance[0]["stats"]["points_removed"] == 1
    assert maintenance[0]["stats"]["bytes_reclaimed"] > BIG // 2
    report = server.ok("session", "show", str(last["id"]))
    assert "1 restore point(s) removed" in report and "reclaimed" in report

    checked = server.ferryman("repo", "check", "default")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    collected = server.json("repo", "gc", "default")  # nothing left to reclaim
    assert collected["kind"] == "maintenance" and collected["status"] == "success"
    assert collected["tasks"][0]["stats"]["bytes_reclaimed"] == 0

    # the two newest points are kept, and they restore byte for byte — including
    # docs/stable.txt, whose only stored copy was written by the first, removed point
    points = server.json("point", "list", "--job", "ret-job")
    assert [p["session"] for p in points] == [s["id"] for s in sessions[-2:]]
    for point, expected in zip(points, trees[-2:], strict=True):
        target = tmp_path / f"restored-{point['id']}"
        server.ok("restore", str(point["id"]), "--to", str(target), "--follow")
        assert tree(target) == expected


def test_a_scheduled_job_fires_by_itself_and_never_twice_at_once(
    server: Installation, tmp_path: Path
) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "f.txt").write_text("scheduled\n")
    server.ok("share", "add", "sched", str(tmp_path / "s"))
    # while no proxy takes tasks, the first scheduled session stays running
    server.ok("proxy", "disable", "embedded")
    try:
        # a sixth cron field counts seconds: every 2 seconds
        server.ok("job", "add", "sched-job", "--share", "sched", "--repo", "default",
                  "--schedule", "* * * * * */2")  # fmt: skip
        job = server.json("job", "show", "sched-job")
        assert job["next_run"] is not None and job["last_run"] is None

        def sessions() -> list[dict[str, object]]:
            return server.json("session", "list", "--job", "sched-job")  # type: ignore[no-any-return]

        first = wait_for(sessions, 30, "the scheduled session")[0]
        assert first["trigger"] == "schedule" and first["status"] == "running"
        refused = server.ferryman("job", "run", "sched-job")
        assert refused.returncode == 1
        assert "already running" in one_error_line(refused)
        time.sleep(3)  # more firing times pass while it runs: skipped
        assert [s["id"] for s in sessions()] == [first["id"]]
        assert server.json("job", "show", "sched-job")["last_run"] is not None
    finally:
        server.ok("proxy", "enable", "embedded")
    wait_for(lambda: len(sessions()) >= 2, 60, "the next scheduled session")
    server.ok("job", "disable", "sched-job")
    assert server.json("job", "show", "sched-job")["next_run"] is None
    final = wait_for(
        lambda: [s for s in sessions() if s["status"] != "running"] == sessions() and sessions(),
        60,
        "the scheduled sessions to end",
    )
    assert {s["trigger"] for s in final} == {"schedule"}
    assert all(s["status"] == "success" for s in final), final
    spans = sorted((s["started"], s["ended"]) for s in final)
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert ended <= started, spans  # one after the other, never two at once

    # the schedule and keep rules change in place; a bad change is one line and changes nothing
    done = server.ferryman("job", "set", "sched-job", "--schedule", "61 * * * *")
    assert done.returncode == 1 and "cron expression" in one_error_line(done)
    changed = server.json("job", "set", "sched-job", "--no-schedule", "--keep-last", "3")
    assert changed["schedule"] is None and changed["keep_last"] == 3


def test_wrong_schedule_and_keep_values_are_one_clear_line(
    server: Installation, tmp_path: Path
) -> None:
    (tmp_path / "w").mkdir()
    server.ok("share", "add", "wrong", str(tmp_path / "w"))
    base = ["job", "add", "wrong-job", "--share", "wrong", "--repo", "default"]
    for schedule in ("61 * * * *", "every day", "0 2 * * 8"):
        done = server.ferryman(*base, "--schedule", schedule)
        assert done.returncode == 1, (schedule, done.stdout, done.stderr)
        assert "cron expression" in one_error_line(done)
    for option, value in (("--keep-last", "0"), ("--keep-weekly", "x")):
        done = server.ferryman(*base, option, value)
        assert done.returncode == 2, (option, value, done.stderr)
        assert option in one_error_line(done)
    assert "wrong-job" not in [j["name"] for j in server.json("job", "list")]  # nothing created


def test_a_bad_time_zone_stops_the_server_with_one_line(server: Installation) -> None:
    # the same home as the running server: refused before anything else is touched
    done = server.ferryman("server", "run", env={"FERRYMAN_TIMEZONE": "Mars/Olympus"}, timeout=60)
    assert done.returncode == 1
    assert "Mars/Olympus" in one_error_line(done)
    assert server.json("job", "list") is not None  # the running server is unaffected


def restart(server: Installation, *options: str) -> None:
    """Stop ``server run`` and start it again on the same home (no new ``server init``)."""
    server.stop()
    with (server.work / "server.log").open("ab") as log:
        server.process = subprocess.Popen(
            [*FERRYMAN, "server", "run", *options],
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def online() -> bool:
        done = server.ferryman("proxy", "list", "--json", timeout=30)
        return done.returncode == 0 and any(p["state"] == "online" for p in json.loads(done.stdout))

    wait_for(online, 60, "the server to come back")


def test_a_run_missed_while_the_server_was_down_is_caught_up_once_at_start_up(
    server: Installation, tmp_path: Path
) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f.txt").write_text("catch up\n")
    server.ok("share", "add", "catch", str(tmp_path / "c"))
    # once a minute, at a second a few seconds from now (a sixth cron field counts seconds)
    fire_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    server.ok("job", "add", "catch-job", "--share", "catch", "--repo", "default",
              "--schedule", f"* * * * * {fire_at.second}")  # fmt: skip
    server.stop()
    time.sleep(max(0.0, (fire_at - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
    restart(server)  # the firing time passed while the server was down

    def sessions() -> list[dict[str, object]]:
        return server.json("session", "list", "--job", "catch-job")  # type: ignore[no-any-return]

    ended = wait_for(
        lambda: [s for s in sessions() if s["status"] != "running"], 60, "the catch-up run"
    )
    assert [(s["trigger"], s["status"]) for s in ended] == [("catch-up", "success")]
    assert len(sessions()) == 1  # once; the next firing time is a minute away
    assert server.json("job", "show", "catch-job")["last_run"] is not None
    server.ok("job", "disable", "catch-job")
