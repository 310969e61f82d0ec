"""Task leases: a task is held only while its proxy heartbeats."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from ferryman.server.db.models import Probe, Proxy, Task, utcnow
from ferryman.server.sessions import ACTIVE_STATES, fail_task, on_task_finished, requeue, touch


def expire_leases(db: DbSession, max_attempts: int) -> int:
    """Requeue tasks whose lease ran out; fail those that used up their attempts."""
    now = utcnow()
    expired = list(
        db.scalars(
            select(Task).where(
                Task.state.in_(ACTIVE_STATES),
                Task.lease_expires.is_not(None),
                Task.lease_expires < now,
            )
        )
    )
    for task in expired:
        proxy = db.get(Proxy, task.proxy_id) if task.proxy_id else None
        name = proxy.name if proxy else task.proxy_name or "?"
        if task.attempts >= max_attempts:
            fail_task(
                task, f"lease expired on proxy '{name}' after {task.attempts} attempts; giving up"
            )
            on_task_finished(db, task)
        else:
            requeue(task, f"lease expired on proxy '{name}' (no heartbeat); requeued")
            touch(task.session)
    return len(expired)


def release_proxy_tasks(db: DbSession, proxy_id: int, reason: str) -> int:
    """Requeue everything a proxy holds (removed, or the embedded proxy died with the server)."""
    tasks = list(
        db.scalars(select(Task).where(Task.proxy_id == proxy_id, Task.state.in_(ACTIVE_STATES)))
    )
    for task in tasks:
        requeue(task, reason)
        touch(task.session)
    return len(tasks)


def remove_proxy(db: DbSession, proxy: Proxy, reason: str) -> None:
    """Requeue its tasks, drop its probes and delete the row. Deleting the row revokes
    its certificate at once: every mTLS call looks the serial up."""
    release_proxy_tasks(db, proxy.id, reason)
    db.execute(delete(Probe).where(Probe.proxy_id == proxy.id))
    db.delete(proxy)
