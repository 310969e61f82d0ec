"""What a starting server does with sessions the previous run left behind."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.db.models import Proxy, Session, Task, utcnow
from ferryman.server.sessions import (
    ACTIVE_STATES,
    FINAL_STATES,
    INTERNAL_KINDS,
    finish_session_if_done,
    requeue,
    touch,
)

log = logging.getLogger("ferryman.server.recovery")


def recover_sessions(db: DbSession, lease_seconds: float) -> int:
    """Resume running sessions: tasks of the embedded proxy (which died with the server) are
    requeued; tasks on remote proxies get a fresh lease so a proxy that is still working can
    confirm them with its next heartbeat (otherwise the lease expires and they are requeued)."""
    embedded = {p.id for p in db.scalars(select(Proxy).where(Proxy.embedded.is_(True)))}
    now = utcnow()
    count = 0
    for session in db.scalars(select(Session).where(Session.status == "running")):
        count += 1
        for task in session.tasks:
            if task.state not in ACTIVE_STATES:
                continue
            if task.proxy_id in embedded or task.proxy_id is None:
                requeue(task, "the server restarted while the task ran; requeued")
            else:
                task.lease_expires = now + dt.timedelta(seconds=lease_seconds)
        if session.kind in INTERNAL_KINDS:
            # nobody waits for these any more
            for task in session.tasks:
                if task.state not in FINAL_STATES:
                    task.state = "stopped"
                    task.ended = now
            session.stop_requested = True
            session.reason = "the server restarted"
        touch(session)
        finish_session_if_done(db, session)
    if count:
        log.info("resuming %d session(s) left running by the previous server run", count)
    return count


def interrupt_embedded_tasks(db: DbSession) -> None:
    """Tasks the embedded proxy could not report before shutdown go back to the queue."""
    embedded = {p.id for p in db.scalars(select(Proxy).where(Proxy.embedded.is_(True)))}
    for task in db.scalars(select(Task).where(Task.state.in_(ACTIVE_STATES))):
        if task.proxy_id in embedded:
            requeue(task, "interrupted by server shutdown; resumes at the next start")
            touch(task.session)
