"""The proxy service loop: heartbeats, long-polls, runs tasks in slot threads, reports.

The same `ProxyService` runs a remote proxy (over `client.HttpsChannel`) and
the embedded one (over `embedded.InProcessChannel`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ferryman
from ferryman.engine.process_pool import use_runtime_directory
from ferryman.logs import configure_logging, log_context, set_process_field
from ferryman.proxy import capabilities, path_names, probing
from ferryman.proxy.protocol import (
    Heartbeat,
    ProbeRequest,
    ProbeResult,
    ProxyChannel,
    TaskAssignment,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)

log = logging.getLogger("ferryman.proxy")

Executor = Callable[
    [TaskAssignment, Path, Callable[[dict[str, Any]], None], threading.Event], TaskResult
]


def release_task_memory() -> None:
    """Return the C heap's free pages to the system (``malloc_trim``) once a task is over.

    Called when a task ends and no other runs (after its result is delivered). What a
    task freed otherwise stays in malloc's per-thread arenas: the embedded proxy's
    server kept ~50 MB of a reference restore for every later task. No ``gc.collect()``
    here: in the server's heap (~150,000 objects) it holds the GIL ~100 ms, stalling
    the API and the dispatcher; the trim itself (tens of ms) runs without the GIL.
    """
    from ferryman.repository.pack_buffers import return_free_memory  # not at import

    return_free_memory()


class ProxyRevoked(Exception):
    """The server no longer knows this proxy (removed / certificate revoked)."""


@dataclass
class RunningTask:
    assignment: TaskAssignment
    cancel: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False
    thread: threading.Thread | None = None


class ProxyService:
    def __init__(
        self,
        channel: ProxyChannel,
        *,
        slots: int,
        site: str | None,
        cache_dir: Path,
        executor: Executor | None = None,
        poll_timeout: float = 20.0,
        progress_interval: float = 0.5,
    ) -> None:
        from ferryman.proxy.task_runner import execute

        self.channel = channel
        self.slots = slots
        self.site = site
        self.cache_dir = cache_dir
        self.executor = executor or execute
        self.poll_timeout = poll_timeout
        self.progress_interval = progress_interval
        self.heartbeat_interval = 5.0
        self.running: dict[int, RunningTask] = {}
        self._lock = threading.Lock()
        self._probe_results: list[ProbeResult] = []
        self._stop = threading.Event()
        self._beat_now = threading.Event()
        self._slot_freed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.revoked = threading.Event()
        self.capabilities = capabilities.detect()
        self.addresses = capabilities.addresses()

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._poll_loop, "poll")):
            thread = threading.Thread(target=target, name=f"proxy-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel running tasks (the engine checkpoints), report them, stop the loops."""
        self._stop.set()
        self._beat_now.set()
        self._slot_freed.set()
        with self._lock:
            tasks = list(self.running.values())
        for task in tasks:
            task.cancel.set()
        deadline = time.monotonic() + timeout
        for task in tasks:
            if task.thread is not None:
                task.thread.join(max(0.1, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(max(0.1, min(2.0, deadline - time.monotonic())))

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    # --- heartbeat ----------------------------------------------------------------------
    def heartbeat_once(self) -> None:
        with self._lock:
            results, self._probe_results = self._probe_results, []
            running = list(self.running)
        beat = Heartbeat(
            slots=self.slots,
            version=ferryman.__version__,
            site=self.site,
            addresses=self.addresses,
            capabilities=self.capabilities,
            running_tasks=running,
            probe_results=results,
        )
        try:
            reply = self.channel.heartbeat(beat)
        except ProxyRevoked:
            raise
        except Exception:
            with self._lock:
                self._probe_results = results + self._probe_results
            raise
        self.heartbeat_interval = reply.heartbeat_interval
        for task_id in reply.cancel_tasks:
            with self._lock:
                task = self.running.get(task_id)
            if task is not None:
                log.info("server asked to drop task %d", task_id)
                task.cancel.set()
        if reply.probes:
            self._start_probes(reply.probes)

    def _heartbeat_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.heartbeat_once()
                failures = 0
            except ProxyRevoked as exc:
                log.error("stopping: %s", exc)
                self.revoked.set()
                self._stop.set()
                break
            except Exception as exc:
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    log.warning("heartbeat failed (%s); retrying", exc)
            self._beat_now.wait(self.heartbeat_interval if failures == 0 else 1.0)
            self._beat_now.clear()

    def _start_probes(self, requests: list[ProbeRequest]) -> None:
        def run() -> None:
            results = [probing.probe(r) for r in requests]
            with self._lock:
                self._probe_results.extend(results)
            self._beat_now.set()

        threading.Thread(target=run, name="probes", daemon=True).start()

    # --- tasks --------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                free = self.slots - len(self.running)
            if free <= 0:
                self._slot_freed.wait(1.0)
                self._slot_freed.clear()
                continue
            try:
                reply = self.channel.poll(self.poll_timeout)
            except ProxyRevoked:
                self.revoked.set()
                self._stop.set()
                break
            except Exception as exc:
                log.debug("poll failed (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            for assignment in reply.tasks:
                self._start_task(assignment)
            if reply.probes:
                self._start_probes(reply.probes)

    def _start_task(self, assignment: TaskAssignment) -> None:
        task = RunningTask(assignment)
        task.thread = threading.Thread(
            target=self._run_task, args=(task,), name=f"task-{assignment.task_id}", daemon=True
        )
        with self._lock:
            if assignment.task_id in self.running:
                return
            self.running[assignment.task_id] = task
            task.thread.start()
        self._beat_now.set()  # tell the server at once that we hold it

    def _run_task(self, task: RunningTask) -> None:
        with log_context(session=task.assignment.session_id, task=task.assignment.task_id):
            self._run_task_logged(task)

    def _run_task_logged(self, task: RunningTask) -> None:
        a = task.assignment
        log.info("task %d (%s) started, attempt %d", a.task_id, a.kind, a.attempt)
        last_sent = [0.0]

        def on_progress(data: dict[str, Any]) -> None:
            now = time.monotonic()
            if task.dropped or now - last_sent[0] < self.progress_interval:
                return
            last_sent[0] = now
            try:
                safe = path_names.json_safe(data)  # e.g. current_path of a non-UTF-8 name
                self.channel.progress(TaskProgress(task_id=a.task_id, progress=safe))
            except TaskReassigned:
                log.warning("task %d was reassigned by the server; dropping it", a.task_id)
                task.dropped = True
                task.cancel.set()
            except Exception as exc:
                log.debug("progress of task %d not delivered: %s", a.task_id, exc)

        try:
            result = self.executor(a, self.cache_dir, on_progress, task.cancel)
            if task.cancel.is_set() and result.state in ("success", "warning"):
                pass  # finished before the cancel took effect: report it
            if not task.dropped:
                self._deliver(result)
        finally:
            with self._lock:
                self.running.pop(a.task_id, None)
                idle = not self.running
            self._slot_freed.set()
            log.info("task %d ended", a.task_id)
            if idle:
                release_task_memory()

    def _deliver(self, result: TaskResult) -> None:
        # paths in warnings may hold bytes that are not UTF-8: JSON cannot carry them raw
        result = result.model_copy(
            update={
                "warnings": path_names.json_safe(result.warnings),
                "error": path_names.json_safe(result.error),
            }
        )
        delay = 0.5
        deadline = time.monotonic() + 600
        while True:
            try:
                self.channel.result(result)
                return
            except TaskReassigned:
                log.warning("result of task %d refused: reassigned", result.task_id)
                return
            except ProxyRevoked:
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("giving up reporting task %d: %s", result.task_id, exc)
                    return
                log.warning("reporting task %d failed (%s); retrying", result.task_id, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def run_remote_proxy(
    server_url: str,
    join_token: str | None,
    *,
    name: str | None = None,
    site: str | None = None,
    slots: int | None = None,
    home: str | Path | None = None,
    **options: Any,
) -> None:
    """Join if needed, then serve until SIGTERM/SIGINT or until the server revokes us."""
    from ferryman.proxy.capacity import default_slots
    from ferryman.proxy.client import HttpsChannel, join_or_load

    configure_logging()  # FERRYMAN_LOG_FORMAT; kept when the caller set logging up already
    use_runtime_directory()  # the restore workers' sockets out of /tmp (systemd unit)
    slots = slots or default_slots()
    identity = join_or_load(server_url, join_token, name=name, site=site, slots=slots, home=home)
    set_process_field("proxy", identity.name)
    channel = HttpsChannel(identity)
    service = ProxyService(
        channel,
        slots=slots,
        site=site if site is not None else identity.site,
        cache_dir=identity.home / "cache",
        poll_timeout=float(options.get("poll_timeout", 20.0)),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    log.info("proxy %s serving %s with %d slot(s)", identity.name, server_url, slots)
    while not stop.wait(0.5):
        if service.revoked.is_set():
            break
    service.stop()
    channel.close()
    if service.revoked.is_set():
        raise ProxyRevoked("the server removed this proxy (certificate revoked)")
