"""The follow view and the session report, fed with session objects (no server)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from ferryman.cli import progress_view
from ferryman.cli.errors import CliError, ServerUnreachable
from ferryman.cli.progress_view import (
    SessionView,
    exit_for_session,
    follow_session,
    next_state,
    summary_line,
)
from ferryman.cli.session_figures import (
    bottleneck,
    compression_ratio,
    counters,
    dedup_ratio,
    eta_seconds,
    headline,
)
from ferryman.cli.session_report import print_report

from .sessions_sample import CHECK_STATS, FINAL_STATS, RESTORE_STATS, session, task


class ScriptedClient:
    """Answers the follow long-poll with the next prepared session state."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({"method": method, "path": path, **kwargs})
        return self.states.pop(0)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        assert path == "/points"  # the previous size of each share, for ETAs
        self.calls.append({"method": "GET", "path": path, "params": params})
        return [{"id": 1, "time": "2026-11-23T02:00:00Z", "bytes": 240_000_000}]


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def test_follow_prints_task_changes_and_summary_off_a_terminal() -> None:
    start = session("running", 1, [task("waiting", proxy=None, reason="no free slot")])
    client = ScriptedClient(
        [
            session("running", 2, [task("running")]),
            session("running", 3, [task("running")]),
            session("warning", 4, [task("warning", stats=FINAL_STATS,
                                        warnings=[{"path": "/a", "reason": "permission denied"}])]),
        ]
    )  # fmt: skip
    console, out = plain_console()
    final = follow_session(client, start, console=console)  # type: ignore[arg-type]
    assert final["status"] == "warning"
    assert exit_for_session(final) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "task 21 docs: waiting (no free slot; p2: cannot reach the share: /srv/x: not found)"
    )
    assert lines[1].startswith("task 21 docs: running on embedded (same site")
    assert lines[2] == (
        "task 21 docs: warning on embedded, 1,500 files, 143.1 MiB read, 23.8 MiB sent, "
        "1 warning(s)"
    )
    assert lines[3].startswith("session 7 backup (job nightly) ended WARNING in 1m15s: 1,500 files")
    assert len(lines) == 4
    # every poll asks for a revision newer than the last one seen; the server sent its
    # own ETA, so the share's previous size (GET /points) was never asked for
    assert [c["path"] for c in client.calls] == ["/sessions/7/follow"] * 3
    assert [c["params"]["revision"] for c in client.calls] == [1, 2, 3]
    assert all(c["path"] == "/sessions/7/follow" for c in client.calls)


def follow_states() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    odd = {"share": "d\x07o\x08cs", "partition": None}  # a bell and a backspace in a name
    return session("running", 1, [task("waiting", proxy=None, reason="no free slot")]), [
        session("running", 2, [task("running", **odd)]),
        session("warning", 3, [task("warning", stats=FINAL_STATS, **odd,
                                    warnings=[{"path": "/a", "reason": "denied"}])]),
    ]  # fmt: skip


def test_off_a_terminal_the_lines_are_what_rich_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following into a pipe prints through PlainLines (no rich), byte for byte what the
    plain rich console printed (control characters rich drops are dropped too)."""
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    start, states = follow_states()
    follow_session(ScriptedClient(list(states)), start)  # type: ignore[arg-type]
    plain = capsys.readouterr().out
    expected = io.StringIO()
    rich_plain = Console(file=expected, highlight=False, width=200, soft_wrap=True)
    follow_session(ScriptedClient(list(states)), start, console=rich_plain)  # type: ignore[arg-type]
    assert plain == expected.getvalue()
    assert "task 21 docs: warning on embedded" in plain and "\x07" not in plain
    assert len(plain.splitlines()) == 4


def test_follow_quietly_for_json() -> None:
    client = ScriptedClient([session("failed", 2, [task("failed", error="boom")])])
    console, out = plain_console()
    final = follow_session(client, session("running", 1, []), live=False, console=console)  # type: ignore[arg-type]
    assert out.getvalue() == ""
    assert exit_for_session(final) == 1


def test_ctrl_c_stops_following_not_the_session() -> None:
    class Interrupting:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt

    console, _ = plain_console()
    with pytest.raises(CliError) as caught:
        follow_session(Interrupting(), session("running", 1, []), console=console)  # type: ignore[arg-type]
    assert caught.value.exit_code == 130
    assert "session 7 keeps running" in caught.value.message


@pytest.mark.parametrize(
    ("status", "code"), [("success", 0), ("warning", 0), ("failed", 1), ("stopped", 3)]
)
def test_exit_codes(status: str, code: int) -> None:
    assert exit_for_session({"status": status}) == code


def test_live_table_renders_each_task() -> None:
    view = SessionView(session("running", 2, [task("running"), task("waiting", id=22, proxy=None,
                       partition={"index": 1, "count": 3, "paths": ["b"]})]))  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=160).print(view)
    text = out.getvalue()
    assert (
        "session 7 backup (job nightly): running, 0/2 tasks done, 1 waiting for resources" in text
    )
    assert "docs [2/3]" in text
    assert "47.7 MiB/s" in text  # the running task's rate
    assert " 12s" in text  # its ETA


def test_running_counters_come_from_progress_final_from_stats() -> None:
    assert counters(task("running"))["bytes_read"] == 40_000_000
    done = counters(task("success", stats=FINAL_STATS))
    assert done["bytes_read"] == 150_000_000
    assert done["files_scanned"] == 1500


def test_ratios_and_bottleneck() -> None:
    values = counters(task("success", stats=FINAL_STATS))
    assert dedup_ratio(values) == pytest.approx(3.0)
    assert compression_ratio(values) == pytest.approx(2.0)
    assert bottleneck(values) == "repository (time: source 13%, proxy 7%, network/repository 80%)"
    assert bottleneck({"bottleneck": "source"}) == "source"
    values.pop("bottleneck")
    assert bottleneck(values).startswith("network/repository (writing) (time: ")  # type: ignore[union-attr]
    assert dedup_ratio({"bytes_read": 10, "bytes_new": 0}) is None


def test_report_shows_placement_figures_and_warnings() -> None:
    final = session(
        "warning",
        9,
        [task("warning", stats=FINAL_STATS, ended="2026-11-24T18:01:15Z",
              warnings=[{"path": "/secret", "reason": "permission denied"}])],
    )  # fmt: skip
    final["reason"] = "1 file could not be read"
    console, out = plain_console()
    print_report(final, console)
    text = out.getvalue()
    assert "session 7 (backup, job nightly)" in text
    assert "status:     WARNING - 1 file could not be read" in text
    assert "duration:   1m15s" in text
    assert "restore points: 3" in text
    assert "task 21 docs: WARNING on embedded" in text
    assert "why this proxy:  same site as the share; lowest load 0/2" in text
    assert "passed over:     p2: cannot reach the share" in text
    assert "1,500 scanned, 1,500 read" in text
    assert "143.1 MiB read, 47.7 MiB new, 23.8 MiB transferred" in text
    assert "dedup ratio:     3.00x" in text and "compression ratio: 2.00x" in text
    assert "bottleneck:      repository (time: source 13%" in text
    assert "/secret: permission denied" in text


def test_restore_and_check_tasks_show_their_own_figures() -> None:
    restore = task("success", kind="restore", stats=RESTORE_STATS)
    assert headline(restore) == "314 files, 2.5 MiB restored, 3 skipped"
    check = task("success", kind="check", share=None, stats=CHECK_STATS)
    assert headline(check) == "4 restore points, 12 packs checked, 12 read, 0 error(s), 1 damaged"
    both = session("success", 3, [restore, dict(restore, id=22)])
    both["kind"] = "restore"
    assert "628 files, 4.9 MiB restored, 6 skipped" in summary_line(both)
    console, out = plain_console()
    print_report(dict(both, tasks=[check]), console)
    assert "checked:         4 restore points, 12 packs (12 read), 350 blobs read" in out.getvalue()
    assert "pack 1f2e: authentication failed" in out.getvalue()


def test_plain_output_repeats_progress_of_long_running_tasks() -> None:
    now = [0.0]
    view = SessionView(session("running", 1, [task("running")]), clock=lambda: now[0])
    console, out = plain_console()
    view.print_changes(console)
    now[0] = 5.0
    view.print_changes(console)  # nothing new, too soon
    now[0] = 16.0
    view.print_changes(console)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == (
        "task 21 docs: running on embedded, 1,200 files, 38.1 MiB read, 9.5 MiB sent, "
        "47.7 MiB/s, ETA 12s"
    )


def test_live_view_says_why_tasks_wait() -> None:
    waiting = task("waiting", proxy=None, reason="all 2 slots of embedded are busy")
    out = io.StringIO()
    Console(file=out, width=160).print(SessionView(session("running", 1, [waiting])))
    assert "task 21 waits: all 2 slots of embedded are busy; p2: cannot reach" in out.getvalue()


def test_plain_output_says_when_why_a_task_waits_changes() -> None:
    view = SessionView(session("running", 1, [task("waiting", proxy=None, reason="queued")]))
    console, out = plain_console()
    view.print_changes(console)
    view.update(session("running", 2, [task("waiting", proxy=None, reason="queued")]))
    view.print_changes(console)  # same reason: no new line
    view.update(session("running", 3, [task("waiting", proxy=None, reason="no eligible proxy")]))
    view.print_changes(console)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "no eligible proxy" in lines[1]


def test_eta_estimated_from_the_previous_point_when_the_server_gives_none() -> None:
    started = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    progress = {"bytes_scanned": 120_000_000, "bytes_read": 1000}
    running = task("running", started=started, progress=progress)
    assert eta_seconds(running, {"docs": 240_000_000}) == pytest.approx(10, abs=1)
    assert eta_seconds(running, {}) is None
    partitioned = dict(running, partition={"index": 0, "count": 2, "paths": ["a"]})
    assert eta_seconds(partitioned, {"docs": 240_000_000}) is None
    with_eta = task("running", progress={"eta_seconds": 42})
    assert eta_seconds(with_eta, {}) == 42


def test_following_survives_a_server_restart() -> None:
    answers: list[Any] = [
        ServerUnreachable("cannot reach the backup server at x: connection refused"),
        ServerUnreachable("cannot reach the backup server at x: connection refused"),
        session("success", 5, []),
    ]

    class Restarting:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    slept: list[float] = []
    state = next_state(Restarting(), session("running", 4, []), sleep=slept.append)  # type: ignore[arg-type]
    assert state["status"] == "success"
    assert slept == [1.0, 1.0]


def test_restore_report_says_what_was_restored_where() -> None:
    restore = session("success", 3, [task("success", kind="restore", stats=RESTORE_STATS)])
    restore.update(kind="restore", point=3, target="/tmp/r", paths=["/docs", "/caf\\xe9"],
                   overwrite="skip", in_place=False)  # fmt: skip
    console, out = plain_console()
    print_report(restore, console)
    text = out.getvalue()
    assert "from point: 3" in text
    assert "paths:      /docs, /caf\\xe9" in text
    assert "target:     to /tmp/r" in text and "overwrite:  skip" in text


def test_report_shows_how_adaptive_io_moved_the_parallelism() -> None:
    adaptive = {
        "max_parallelism": 4,
        "min_parallelism": 1,
        "final_parallelism": 3,
        "changes": 5,
        "baseline_latency_ms": 2.1,
        "peak_latency_ms": 38.0,
        "events": [{"at": 3.5, "from": 4, "to": 2, "latency_ms": 38.0}],
    }
    stats = dict(FINAL_STATS, io_adaptive=adaptive)
    console, out = plain_console()
    print_report(session("success", 9, [task("success", stats=stats)]), console)
    line = "adaptive I/O:    parallelism 4→1→3 (5 changes), source latency 2.1 ms → 38.0 ms (peak)"
    assert line in out.getvalue()
    # never lowered: one figure; a static level: no line at all
    calm = dict(adaptive, min_parallelism=4, final_parallelism=4, changes=0, events=[])
    console, out = plain_console()
    print_report(
        session("success", 9, [task("success", stats=dict(stats, io_adaptive=calm))]), console
    )
    assert "parallelism 4 (0 changes)" in out.getvalue()
    bulk = dict(adaptive, latency_unit="MiB")  # large files: latency per MiB read
    console, out = plain_console()
    print_report(
        session("success", 9, [task("success", stats=dict(stats, io_adaptive=bulk))]), console
    )
    assert "source latency per MiB 2.1 ms → 38.0 ms (peak)" in out.getvalue()
    console, out = plain_console()
    print_report(session("success", 9, [task("success", stats=FINAL_STATS)]), console)
    assert "adaptive I/O" not in out.getvalue()


def test_follow_asks_for_the_previous_size_only_when_an_estimate_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the server's ETA, a running task's progress line estimates one from the
    share's newest restore point, asked for once, when that line is printed."""
    monkeypatch.setattr(progress_view, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line per poll
    no_eta = task("running")
    del no_eta["progress"]["eta_seconds"]
    client = ScriptedClient(
        [
            session("running", 2, [no_eta]),
            session("running", 3, [no_eta]),
            session("success", 4, [task("success")]),
        ]
    )
    console, out = plain_console()
    final = follow_session(client, session("running", 1, [no_eta]), console=console)  # type: ignore[arg-type]
    assert final["status"] == "success"
    # asked once, when the first progress line needed it (after the first poll)
    assert [c["path"] for c in client.calls] == [
        "/sessions/7/follow",
        "/points",
        "/sessions/7/follow",
        "/sessions/7/follow",
    ]
    assert client.calls[1]["params"] == {"share": "docs"}
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("task 21 docs: running on embedded, 1,200 files, 38.1 MiB read")
    assert "ETA" in lines[1] and "ETA" in lines[2]
