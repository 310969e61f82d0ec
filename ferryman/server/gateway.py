"""The server side of the proxy protocol: join, heartbeat, long-poll, progress, results.

Both the mutual-TLS routes (`/proxy/v1`) and the embedded proxy's in-process
channel call this class, so remote and embedded proxies follow the same rules.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from ferryman.proxy.protocol import (
    Heartbeat,
    HeartbeatReply,
    JoinRequest,
    JoinResponse,
    PollReply,
    RepositoryAccess,
    ShareSpec,
    TaskAssignment,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)
from ferryman.server import eta
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Probe, Proxy, Repository, Session, Share, Task, utcnow
from ferryman.server.probes import (
    ProbeTracker,
    invalidate,
    needed_probes,
    share_credentials,
    store_probe_results,
)
from ferryman.server.sessions import ACTIVE_STATES, on_task_finished, requeue, touch
from ferryman.server.throughput import record_sample
from ferryman.server.tokens import consume_join_token

log = logging.getLogger("ferryman.server.gateway")


def with_eta(db: DbSession, task: Task, progress: dict[str, object]) -> dict[str, object]:
    """A backup task's progress with ``eta_seconds`` when the previous run's size is known."""
    if task.kind != "backup" or task.share_id is None or task.started is None:
        return progress
    share = db.get(Share, task.share_id)
    expected = eta.expected_bytes(share.last_stats if share else None, task.partition)
    left = eta.eta_seconds(progress, expected, (utcnow() - task.started).total_seconds())
    return {**progress, "eta_seconds": left} if left is not None else progress


def since(task: Task) -> dt.datetime:
    """When the current attempt of a running task began: its proxy picked it up then, and a
    heartbeat that proxy composed just before must not count as "no longer runs it".

    ``started`` is the first attempt's start (a retried task may have waited in the queue
    far longer than the grace since); tasks picked up before ``attempt_started`` existed
    fall back to the later of the first start and the last requeue.
    """
    if task.attempt_started is not None:
        return task.attempt_started
    assert task.started is not None
    return max(task.started, task.queued)


class ProxyGone(Exception):
    """The proxy was removed (its certificate is revoked)."""


class NameTaken(Exception):
    pass


class ProxyGateway:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.probes = ProbeTracker()

    # --- registration -------------------------------------------------------------------
    def join(self, request: JoinRequest) -> JoinResponse:
        with self.ctx.db.session() as db:
            if db.scalar(select(Proxy).where(Proxy.name == request.name)) is not None:
                raise NameTaken(f"a proxy named '{request.name}' already exists")
            consume_join_token(db, request.token, request.name)
            certificate, serial = self.ctx.ca.sign_proxy_csr(request.csr_pem, request.name)
            proxy = Proxy(
                name=request.name,
                site=request.site,
                slots=request.slots,
                version=request.version,
                addresses=request.addresses,
                capabilities=request.capabilities,
                cert_serial=format(serial, "x"),
            )
            db.add(proxy)
            try:
                db.flush()
            except IntegrityError as exc:
                raise NameTaken(f"a proxy named '{request.name}' already exists") from exc
            log.info("proxy %s joined (id %d, site %s)", proxy.name, proxy.id, proxy.site)
            return JoinResponse(
                proxy_id=proxy.id,
                name=proxy.name,
                certificate_pem=certificate,
                ca_pem=self.ctx.ca.cert_pem.decode(),
            )

    def proxy_for_serial(self, serial: int) -> int:
        with self.ctx.db.session() as db:
            proxy_id = db.scalar(select(Proxy.id).where(Proxy.cert_serial == format(serial, "x")))
        if proxy_id is None:
            raise ProxyGone("this proxy certificate is revoked or unknown")
        return proxy_id

    # --- heartbeat ----------------------------------------------------------------------
    def heartbeat(self, proxy_id: int, beat: Heartbeat) -> HeartbeatReply:
        cfg = self.ctx.config
        now = utcnow()
        grace = dt.timedelta(seconds=max(2 * cfg.heartbeat_interval, 2.0))
        with self.ctx.db.session() as db:
            proxy = db.get(Proxy, proxy_id)
            if proxy is None:
                raise ProxyGone("this proxy was removed")
            came_back = proxy.last_heartbeat is None or (
                (now - proxy.last_heartbeat).total_seconds() > cfg.offline_after
            )
            proxy.slots = beat.slots
            proxy.version = beat.version
            if beat.site is not None or proxy.site is None:
                proxy.site = beat.site
            proxy.addresses = beat.addresses
            proxy.capabilities = beat.capabilities
            proxy.last_heartbeat = now
            reported = set(beat.running_tasks)
            mine = list(
                db.scalars(
                    select(Task).where(Task.proxy_id == proxy_id, Task.state.in_(ACTIVE_STATES))
                )
            )
            keep: list[int] = []
            cancel: list[int] = []
            for task in mine:
                task.lease_expires = now + dt.timedelta(seconds=cfg.lease_seconds)
                if task.id in reported:
                    keep.append(task.id)
                    if task.session.stop_requested:
                        cancel.append(task.id)
                elif task.state == "running" and task.started and now - since(task) > grace:
                    requeue(task, f"proxy '{proxy.name}' no longer runs the task; requeued")
                    touch(task.session)
            mine_ids = {t.id for t in mine}
            cancel += [tid for tid in reported if tid not in mine_ids]
            store_probe_results(db, proxy_id, beat.probe_results, self.probes)
            probes = needed_probes(db, proxy_id, self.ctx.secrets, self.probes, cfg.probe_max_age)
        if came_back or beat.probe_results or cancel:
            self.ctx.signals.dispatch.set()
        return HeartbeatReply(
            keep_tasks=keep,
            cancel_tasks=sorted(set(cancel)),
            probes=probes,
            heartbeat_interval=cfg.heartbeat_interval,
        )

    # --- long-poll for tasks ------------------------------------------------------------
    def poll(self, proxy_id: int, timeout: float) -> PollReply:
        deadline = time.monotonic() + max(0.0, min(timeout, 60.0))
        event = self.ctx.signals.proxy_event(proxy_id)
        while True:
            event.clear()
            reply = self._collect(proxy_id)
            if reply.tasks or reply.probes:
                return reply
            left = deadline - time.monotonic()
            if left <= 0 or self.ctx.shutting_down.is_set():
                return reply
            event.wait(min(left, 1.0))

    def _collect(self, proxy_id: int) -> PollReply:
        cfg = self.ctx.config
        now = utcnow()
        assignments: list[TaskAssignment] = []
        with self.ctx.db.session() as db:
            proxy = db.get(Proxy, proxy_id)
            if proxy is None:
                raise ProxyGone("this proxy was removed")
            tasks = db.scalars(
                select(Task)
                .where(Task.proxy_id == proxy_id, Task.state == "assigned")
                .order_by(Task.id)
            )
            for task in tasks:
                task.state = "running"
                task.started = task.started or now
                task.attempt_started = now
                task.lease_expires = now + dt.timedelta(seconds=cfg.lease_seconds)
                touch(task.session)
                assignments.append(self._assignment(db, task))
            probes = needed_probes(db, proxy_id, self.ctx.secrets, self.probes, cfg.probe_max_age)
        if assignments:
            self.ctx.signals.session_changed()
        return PollReply(tasks=assignments, probes=probes)

    def _assignment(self, db: DbSession, task: Task) -> TaskAssignment:
        access = None
        if task.repository_id is not None:
            repo = db.get(Repository, task.repository_id)
            if repo is not None:
                access = self.repository_access(repo)
        share = None
        if task.share_id is not None:
            row = db.get(Share, task.share_id)
            if row is not None:
                share = ShareSpec(
                    id=row.id,
                    name=row.name,
                    url=row.url,
                    include=row.include,
                    exclude=row.exclude,
                    credentials=share_credentials(row, self.ctx.secrets),
                    snapshot=row.snapshot,
                    io_control=row.io_control,
                )
        params = dict(task.params or {})
        if task.kind == "backup":
            cfg = self.ctx.config
            params.setdefault("checkpoint_interval", cfg.checkpoint_interval)
            params.setdefault(
                "plan_stats_above",
                {"files": cfg.partition_min_files // 2, "bytes": cfg.partition_min_bytes // 2},
            )
        if task.kind == "maintenance":
            params.setdefault("repack_below", self.ctx.config.gc_repack_below)
        params.setdefault("session_id", task.session_id)
        params.setdefault("job", task.session.job_name)
        return TaskAssignment(
            task_id=task.id,
            session_id=task.session_id,
            kind=task.kind,  # type: ignore[arg-type]
            attempt=task.attempts,
            repository=access,
            share=share,
            partition=task.partition,
            params=params,
        )

    def repository_access(self, repo: Repository) -> RepositoryAccess:
        box = self.ctx.secrets
        return RepositoryAccess(
            id=repo.id,
            name=repo.name,
            url=repo.url,
            passphrase=box.decrypt(repo.passphrase_secret, f"repository:{repo.id}:passphrase"),
            access_key=box.decrypt(repo.access_key_secret, f"repository:{repo.id}:access_key")
            if repo.access_key_secret
            else None,
            secret_key=box.decrypt(repo.secret_key_secret, f"repository:{repo.id}:secret_key")
            if repo.secret_key_secret
            else None,
        )

    # --- progress and results -----------------------------------------------------------
    def _owned(self, db: DbSession, proxy_id: int, task_id: int) -> Task:
        task = db.get(Task, task_id)
        if task is None or task.proxy_id != proxy_id or task.state not in ACTIVE_STATES:
            raise TaskReassigned(f"task {task_id} is no longer assigned to this proxy")
        return task

    def progress(self, proxy_id: int, update: TaskProgress) -> None:
        with self.ctx.db.session() as db:
            task = self._owned(db, proxy_id, update.task_id)
            task.progress = with_eta(db, task, update.progress)
            record_sample(db, task, update.progress)
            touch(task.session)
        self.ctx.signals.session_changed()

    def result(self, proxy_id: int, result: TaskResult) -> None:
        with self.ctx.db.session() as db:
            task = self._owned(db, proxy_id, result.task_id)
            attached = task.kind == "attach" and result.state == "success"
            session: Session = task.session
            unreachable = result.output.get("unreachable") if result.state == "failed" else None
            if unreachable in ("share", "repository"):
                target = task.share_id if unreachable == "share" else task.repository_id
                if target is not None:
                    invalidate(db, proxy_id, unreachable, target)  # re-probed before reuse
            if result.state == "stopped" and not session.stop_requested:
                # the proxy was shutting down, not asked to stop: run it again elsewhere
                if self.ctx.shutting_down.is_set():  # the embedded proxy stops with us
                    why = "interrupted by server shutdown; requeued for the next start"
                else:
                    why = f"interrupted on proxy '{task.proxy_name}'; requeued"
                requeue(task, why)
                touch(session)
            elif (
                unreachable
                and task.kind != "attach"
                and task.attempts < self.ctx.config.max_attempts
                and not session.stop_requested
            ):
                requeue(
                    task,
                    f"proxy '{task.proxy_name}' could not reach the {unreachable} "
                    f"({result.error}); requeued",
                )
                touch(session)
            else:
                task.state = result.state
                task.stats = result.stats
                task.warnings = result.warnings
                task.error = result.error
                task.output = result.output
                task.ended = utcnow()
                task.lease_expires = None
                record_sample(db, task, result.stats, final=True)
                if task.kind == "attach" and result.state == "success" and task.repository_id:
                    # probes taken while it did not exist yet are wrong now
                    db.execute(
                        delete(Probe).where(
                            Probe.kind == "repository", Probe.target_id == task.repository_id
                        )
                    )
                on_task_finished(db, task)
        if attached:
            self.ctx.signals.wake_all_proxies()  # probe the new repository now
        self.ctx.signals.dispatch.set()
        self.ctx.signals.session_changed()
