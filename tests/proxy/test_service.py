"""The proxy service loop against a fake channel: runs tasks in slots, reports, drops
reassigned tasks, answers probes, retries delivery."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from ferryman.proxy.protocol import (
    Heartbeat,
    HeartbeatReply,
    PollReply,
    ProbeRequest,
    TaskAssignment,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)
from ferryman.proxy.service import ProxyService


class FakeChannel:
    def __init__(self) -> None:
        self.queue: list[TaskAssignment] = []
        self.probes: list[ProbeRequest] = []
        self.beats: list[Heartbeat] = []
        self.results: list[TaskResult] = []
        self.progress_seen: list[TaskProgress] = []
        self.cancel: list[int] = []
        self.reassigned: set[int] = set()
        self.fail_results = 0
        self.lock = threading.Lock()

    def heartbeat(self, beat: Heartbeat) -> HeartbeatReply:
        with self.lock:
            self.beats.append(beat)
            probes, self.probes = self.probes, []
            cancel, self.cancel = self.cancel, []
        return HeartbeatReply(cancel_tasks=cancel, probes=probes, heartbeat_interval=0.05)

    def poll(self, timeout: float) -> PollReply:
        with self.lock:
            tasks, self.queue = self.queue, []
        if not tasks:
            time.sleep(0.02)
        return PollReply(tasks=tasks)

    def progress(self, update: TaskProgress) -> None:
        if update.task_id in self.reassigned:
            raise TaskReassigned("gone")
        self.progress_seen.append(update)

    def result(self, result: TaskResult) -> None:
        if self.fail_results:
            self.fail_results -= 1
            raise ConnectionError("server unreachable")
        if result.task_id in self.reassigned:
            raise TaskReassigned("gone")
        self.results.append(result)


def assignment(task_id: int) -> TaskAssignment:
    return TaskAssignment(task_id=task_id, session_id=1, kind="backup")


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def slow_executor(
    a: TaskAssignment, cache: Path, progress: Any, cancel: threading.Event
) -> TaskResult:
    for i in range(100):
        progress({"files_scanned": i})
        if cancel.wait(0.01):
            return TaskResult(task_id=a.task_id, state="stopped")
    return TaskResult(task_id=a.task_id, state="success", stats={"files": 100})


def test_runs_tasks_reports_results_and_keeps_to_its_slots(tmp_path: Path) -> None:
    channel = FakeChannel()
    running_max = [0]
    active = [0]
    lock = threading.Lock()

    def executor(
        a: TaskAssignment, cache: Path, progress: Any, cancel: threading.Event
    ) -> TaskResult:
        with lock:
            active[0] += 1
            running_max[0] = max(running_max[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return TaskResult(task_id=a.task_id, state="success")

    service = ProxyService(
        channel, slots=2, site="x", cache_dir=tmp_path, executor=executor, poll_timeout=0.1
    )
    service.start()
    channel.queue.extend(assignment(i) for i in (1, 2))
    until(lambda: len(channel.results) == 2)
    channel.queue.append(assignment(3))
    until(lambda: len(channel.results) == 3)
    service.stop(timeout=5)
    assert sorted(r.task_id for r in channel.results) == [1, 2, 3]
    assert running_max[0] <= 2
    assert any(1 in b.running_tasks for b in channel.beats)
    assert channel.beats[0].site == "x" and channel.beats[0].slots == 2


def test_server_cancel_and_reassignment_drop_the_task(tmp_path: Path) -> None:
    channel = FakeChannel()
    service = ProxyService(
        channel,
        slots=2,
        site=None,
        cache_dir=tmp_path,
        executor=slow_executor,
        poll_timeout=0.1,
        progress_interval=0,
    )
    service.start()
    channel.queue.extend([assignment(1), assignment(2)])
    until(lambda: len(channel.progress_seen) > 2)
    channel.cancel.append(1)  # e.g. the session was stopped
    channel.reassigned.add(2)  # our lease expired: the next progress call is refused
    until(lambda: not service.running)
    service.stop(timeout=5)
    assert [(r.task_id, r.state) for r in channel.results] == [(1, "stopped")]


def test_stop_cancels_running_tasks_and_reports_them(tmp_path: Path) -> None:
    channel = FakeChannel()
    service = ProxyService(
        channel, slots=1, site=None, cache_dir=tmp_path, executor=slow_executor, poll_timeout=0.1
    )
    service.start()
    channel.queue.append(assignment(7))
    until(lambda: bool(service.running))
    service.stop(timeout=5)
    assert [(r.task_id, r.state) for r in channel.results] == [(7, "stopped")]


def test_result_delivery_is_retried(tmp_path: Path) -> None:
    channel = FakeChannel()
    channel.fail_results = 2

    def quick(a: TaskAssignment, cache: Path, progress: Any, cancel: threading.Event) -> TaskResult:
        return TaskResult(task_id=a.task_id, state="success")

    service = ProxyService(
        channel, slots=1, site=None, cache_dir=tmp_path, executor=quick, poll_timeout=0.1
    )
    service.start()
    channel.queue.append(assignment(5))
    until(lambda: len(channel.results) == 1, timeout=10)
    service.stop(timeout=5)


def test_probes_are_answered_in_the_next_heartbeat(tmp_path: Path) -> None:
    channel = FakeChannel()
    channel.probes = [
        ProbeRequest(kind="share", target_id=1, url=str(tmp_path)),
        ProbeRequest(kind="share", target_id=2, url=str(tmp_path / "missing")),
        ProbeRequest(kind="repository", target_id=3, url=str(tmp_path / "new-repo")),
        ProbeRequest(kind="repository", target_id=4, url=str(tmp_path / "repo")),
    ]
    from ferryman.repository import Repository, open_backend

    (tmp_path / "repo").mkdir()
    Repository.init(open_backend(str(tmp_path / "repo")), "pw", scrypt_n=1024).close()
    service = ProxyService(channel, slots=1, site=None, cache_dir=tmp_path, poll_timeout=0.1)
    service.start()
    until(lambda: any(b.probe_results for b in channel.beats))
    service.stop(timeout=5)
    results = {r.target_id: r for b in channel.beats for r in b.probe_results}
    assert results[1].ok and results[1].rtt_ms is not None
    assert not results[2].ok and "no such folder" in (results[2].error or "")
    # a location where a repository could be created is not the repository the server means
    assert not results[3].ok
    assert results[4].ok


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_a_task_freed_is_given_back_when_the_proxy_is_idle(tmp_path: Path) -> None:
    """A long-running proxy does not keep the high-water mark of its last task: what
    the task freed but malloc kept (holes between live blocks) goes back to the system."""
    channel = FakeChannel()
    kept: list[bytes] = []  # outlives the task: pins the freed blocks between them
    seen: dict[str, int] = {}

    def executor(
        a: TaskAssignment, cache: Path, progress: Any, cancel: threading.Event
    ) -> TaskResult:
        seen["before"] = _rss()
        size = 2048  # a variable: a constant product would be folded into one object
        blocks = [b"\1" * size for _ in range(40_000)]  # ~80 MB in this thread's arena
        kept.extend(blocks[::64])
        del blocks
        seen["after"] = _rss()  # freed, still resident
        return TaskResult(task_id=a.task_id, state="success")

    service = ProxyService(
        channel, slots=1, site=None, cache_dir=tmp_path, executor=executor, poll_timeout=0.1
    )
    service.start()
    try:
        channel.queue.append(assignment(1))
        until(lambda: len(channel.results) == 1)
        assert seen["after"] - seen["before"] > 60 << 20  # malloc kept what was freed
        until(lambda: _rss() < seen["after"] - (50 << 20))
    finally:
        service.stop(timeout=5)
    assert len(kept) == 625
