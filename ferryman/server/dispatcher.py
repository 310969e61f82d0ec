"""The dispatcher: places waiting tasks on proxies, fairly, and keeps leases honest.

One thread per server. It wakes when something changes (a task is queued, a
slot frees, a proxy heartbeats or reports a probe) and at a steady interval.
Placement itself is `placement.pick_proxy`; this module builds its inputs from
the database and records the decision and its reason on the task.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator

from sqlalchemy import event, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import contains_eager

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Probe, Proxy, Repository, Session, Share, Task, utcnow
from ferryman.server.leases import expire_leases
from ferryman.server.placement import (
    IO_CONTROL_MAX_PROXIES,
    ProbeView,
    ProxyView,
    TaskNeeds,
    pick_proxy,
)
from ferryman.server.sessions import (
    ACTIVE_STATES,
    FINAL_STATES,
    NEW_TASK_REASON,
    fail_task,
    finish_session_if_done,
    on_task_finished,
    touch,
)

log = logging.getLogger("ferryman.server.dispatcher")

# what each task kind needs to reach
NEEDS_SHARE = {
    "backup": True,
    "restore": False,
    "assemble": False,
    "check": False,
    "browse": False,
    "attach": False,
    "scan": True,
    "maintenance": False,
}
NEEDS_REPOSITORY = {
    "backup": True,
    "restore": True,
    "assemble": True,
    "check": True,
    "browse": True,
    "attach": False,
    "scan": False,
    "maintenance": True,
}


def proxy_views(db: DbSession, offline_after: float) -> list[ProxyView]:
    now = utcnow()
    busy = Counter(db.scalars(select(Task.proxy_id).where(Task.state.in_(ACTIVE_STATES))).all())
    probes: dict[int, dict[tuple[str, int], ProbeView]] = defaultdict(dict)
    for probe in db.scalars(select(Probe)):
        probes[probe.proxy_id][(probe.kind, probe.target_id)] = ProbeView(
            ok=probe.ok,
            age=(now - probe.checked).total_seconds(),
            error=probe.error,
            rtt_ms=probe.rtt_ms,
        )
    views = []
    for proxy in db.scalars(select(Proxy).order_by(Proxy.id)):
        age = (now - proxy.last_heartbeat).total_seconds() if proxy.last_heartbeat else 1e9
        views.append(
            ProxyView(
                id=proxy.id,
                name=proxy.name,
                site=proxy.site,
                slots=proxy.slots,
                busy=busy.get(proxy.id, 0),
                online=age <= offline_after,
                enabled=proxy.enabled,
                offline_for=age,
                probes=probes[proxy.id],
                capabilities=proxy.capabilities or {},
            )
        )
    return views


FIRST_WINDOW = 64  # waiting tasks read by the first query, in placement order; a freed slot
MAX_WINDOW = 512  # usually takes one of the first few, so windows start small and then double


def waiting_tasks(db: DbSession, free_slots: int) -> Iterator[Task]:
    """Waiting tasks in placement order (job priority, then age), read a window at a time.
    With no free slot anywhere only new tasks are visited, to give them a reason."""
    query = (
        select(Task)
        .join(Session, Task.session_id == Session.id)
        .where(Task.state == "waiting", Session.status == "running")
        .order_by(Task.priority.desc(), Task.queued, Task.id)
        .options(contains_eager(Task.session))
    )
    if free_slots <= 0:
        query = query.where(Task.reason == NEW_TASK_REASON)
    offset, window = 0, FIRST_WINDOW
    while True:
        batch = list(db.scalars(query.offset(offset).limit(window)))
        yield from batch
        if len(batch) < window:
            return
        offset += window
        window = min(window * 2, MAX_WINDOW)


def any_task_waits(db: DbSession) -> bool:
    """Whether a running session has a task waiting for a proxy (one row of the queue index)."""
    query = (
        select(Task.id)
        .join(Session, Task.session_id == Session.id)
        .where(Task.state == "waiting", Session.status == "running")
        .limit(1)
    )
    return db.scalar(query) is not None


def place_waiting_tasks(ctx: ServerContext, db: DbSession) -> list[int]:
    """One placement round. Returns ids of proxies that received tasks."""
    if not any_task_waits(db):
        # the usual round while tasks run: reading every proxy, probe, share, repository
        # and job first cost ~6 ms of GIL-holding Python twice a second beside the backup
        return []
    proxies = proxy_views(db, ctx.config.offline_after)
    by_id = {p.id: p for p in proxies}
    active = list(db.scalars(select(Task).where(Task.state.in_(ACTIVE_STATES))))
    repo_running = Counter(t.repository_id for t in active if t.repository_id is not None)
    # one maintenance task (deletions and garbage collection) per repository at a time
    repo_maintained = {t.repository_id for t in active if t.kind == "maintenance"}
    share_proxies: dict[int, set[int]] = defaultdict(set)
    session_tasks: dict[int, Counter[int]] = defaultdict(Counter)
    for t in active:
        if t.share_id is not None and t.proxy_id is not None and t.kind == "backup":
            share_proxies[t.share_id].add(t.proxy_id)
        if t.proxy_id is not None:
            session_tasks[t.session_id][t.proxy_id] += 1
    shares = {s.id: s for s in db.scalars(select(Share))}
    repos = {r.id: r for r in db.scalars(select(Repository))}
    jobs = {j.id: j for j in db.scalars(select(Job))}
    woken: list[int] = []
    wants_probes: set[int] = set()
    now = utcnow()
    free = sum(max(0, p.slots - p.busy) for p in proxies if p.online and p.enabled)
    only_new = free <= 0
    for task in waiting_tasks(db, free):
        if free <= 0 and not only_new:
            break  # every slot is taken: the rest keeps its reason until one frees
        share: Share | None = shares.get(task.share_id) if task.share_id else None
        repo: Repository | None = repos.get(task.repository_id) if task.repository_id else None
        job = jobs.get(task.session.job_id) if task.session.job_id else None
        if task.kind == "maintenance" and repo is not None and repo.id in repo_maintained:
            reason = f"waiting for another maintenance task of repository '{repo.name}'"
            if task.reason != reason:
                task.reason = reason
                touch(task.session)
            continue
        needs = TaskNeeds(
            kind=task.kind,
            share_id=share.id if share else None,
            share_name=share.name if share else None,
            share_site=share.site if share else None,
            repository_id=repo.id if repo else None,
            repository_name=repo.name if repo else None,
            allowed_proxy_ids=set(job.proxy_ids) if job and job.proxy_ids else None,
            share_proxies=share_proxies[share.id] if share and task.kind == "backup" else set(),
            share_max_proxies=IO_CONTROL_MAX_PROXIES.get(share.io_control)
            if share and task.kind == "backup"
            else None,
            session_tasks=dict(session_tasks[task.session_id]),
            repository_running=repo_running.get(repo.id, 0) if repo else 0,
            repository_max=repo.max_tasks if repo else None,
            source_type=share.url.split("://", 1)[0]
            if share and share.url.startswith(("s3://", "smb://"))
            else "local",
            snapshot_provider=(share.snapshot or {}).get("provider")
            if share and task.kind == "backup"
            else None,
            # an in-place restore writes into the share: only a proxy reaching it may take it
            needs_share_probe=NEEDS_SHARE.get(task.kind, False)
            or (task.kind == "restore" and bool((task.params or {}).get("in_place"))),
            needs_repository_probe=NEEDS_REPOSITORY.get(task.kind, False),
        )
        decision = pick_proxy(proxies, needs)
        wants_probes.update(decision.wants_probes)
        if decision.proxy is None:
            if needs.allowed_proxy_ids is not None and not needs.allowed_proxy_ids & set(by_id):
                fail_task(task, "none of the proxies the job names exists any more")
                on_task_finished(db, task)
                continue
            if _nobody_can_reach(decision.passed_over, proxies, needs) and (
                (now - task.queued).total_seconds() > ctx.config.unreachable_timeout
            ):
                reasons = "; ".join(f"{p['proxy']}: {p['reason']}" for p in decision.passed_over)
                fail_task(task, f"no proxy can reach what this task needs ({reasons})")
                on_task_finished(db, task)
                continue
            if task.reason != decision.reason or task.passed_over != decision.passed_over:
                task.reason = decision.reason
                task.passed_over = decision.passed_over
                touch(task.session)
            continue
        chosen = decision.proxy
        reason = decision.reason
        if task.attempts > 0 and task.reason and "requeued" in task.reason:
            # keep why the task moved: it is the interesting part of a retried task's story
            reason = f"{reason} (attempt {task.attempts + 1}; {task.reason})"
        task.state = "assigned"
        task.proxy_id = chosen.id
        task.proxy_name = chosen.name
        task.reason = reason
        task.passed_over = decision.passed_over
        task.attempts += 1
        task.lease_expires = now + dt.timedelta(seconds=ctx.config.lease_seconds)
        touch(task.session)
        # keep the round's view current for the next task
        by_id[chosen.id].busy += 1
        if repo:
            repo_running[repo.id] += 1
            if task.kind == "maintenance":
                repo_maintained.add(repo.id)
        if share and task.kind == "backup":
            share_proxies[share.id].add(chosen.id)
        session_tasks[task.session_id][chosen.id] += 1
        woken.append(chosen.id)
        free -= 1
        log.info(
            "task %d -> %s: %s",
            task.id,
            chosen.name,
            decision.reason,
            extra={"session": task.session_id, "task": task.id, "proxy": chosen.name},
        )
    for proxy_id in wants_probes:
        ctx.signals.wake_proxy(proxy_id)
    return woken


def _nobody_can_reach(
    passed_over: list[dict[str, str]], proxies: list[ProxyView], needs: TaskNeeds
) -> bool:
    """Every online, enabled proxy the job allows was refused for connectivity."""
    candidates = {
        p.name
        for p in proxies
        if p.online
        and p.enabled
        and (needs.allowed_proxy_ids is None or p.id in needs.allowed_proxy_ids)
    }
    refused = {p["proxy"] for p in passed_over if p["reason"].startswith("cannot reach")}
    return bool(candidates) and candidates <= refused


def finish_idle_sessions(db: DbSession) -> None:
    """Finish running sessions none of whose tasks is still open (usually already done)."""
    open_task = (
        select(Task.id)
        .where(Task.session_id == Session.id, Task.state.not_in(FINAL_STATES))
        .exists()
    )
    for session in db.scalars(select(Session).where(Session.status == "running", ~open_task)):
        finish_session_if_done(db, session)


def _note_writes(db: DbSession, wrote: list[bool]) -> None:
    """Append to ``wrote`` whenever ``db`` flushes changes (commit flushes what is pending)."""
    event.listen(db, "after_flush", lambda _session, _context: wrote.append(True))


class Dispatcher:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def run_once(self) -> None:
        wrote: list[bool] = []
        with self.ctx.db.session() as db:
            _note_writes(db, wrote)
            expire_leases(db, self.ctx.config.max_attempts)
            # a server shutting down places nothing: tasks its embedded proxy gives back
            # wait for the next start instead of being assigned to a proxy about to stop
            shutting_down = self.ctx.shutting_down.is_set()
            woken = [] if shutting_down else place_waiting_tasks(self.ctx, db)
        # placements are committed: wake their proxies before the bookkeeping below
        for proxy_id in set(woken):
            self.ctx.signals.wake_proxy(proxy_id)
        with self.ctx.db.session() as db:
            _note_writes(db, wrote)
            finish_idle_sessions(db)
        if wrote:
            # only a round that changed something wakes the session followers (CLI, console,
            # notifier): an unconditional wake made each re-read its session twice a second
            self.ctx.signals.session_changed()

    def _loop(self) -> None:
        signal = self.ctx.signals.dispatch
        while not self._stop.is_set():
            signal.wait(self.ctx.config.dispatch_interval)
            signal.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except Exception:
                log.exception("dispatcher round failed; retrying")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ctx.signals.dispatch.set()
        if self._thread:
            self._thread.join(timeout=10)
